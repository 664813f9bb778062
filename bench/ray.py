"""Ray executor: submit -> start latency and per-job overhead on a local Ray cluster, side by side with `local`.

The issue: "a 1 s Ray job takes 2-3 s from submit to end; goal: overhead <= 1 s per job". One run measures both
executors on the same machine, so the figures compare.

Setup (not timed): AGENTKIT_* variables are dropped from the environment first, so the defaults are measured. A
throwaway Ray cluster is started with `agentkit_ray.local_cluster.start(head_cpus=2, worker_cpus=[2])` (a head and
one worker node on 127.0.0.1, free ports, a temp dir of its own; other Ray clusters on the machine are left alone)
and stopped at the end whatever happened. Each part runs in its own throwaway git repo (`git init`, one empty
commit) in a temp dir, with os.chdir into it, AGENTKIT_EXECUTORS_RAY_ADDRESS = the cluster's dashboard URL and
the part's settings put in os.environ before its `agentkit.repo.Repo` is made. Jobs are spawned through the core
API, `agentkit.jobs.spawn(repo, ["sleep", "1"], executor=E)`, and waited for with `agentkit.jobs.wait(repo, ids,
timeout=...)`. If `import ray` fails the bench prints a skip line and exits 0.

Times come from the job rows (`jobs.get`: submitted_at, dispatched_at, started_at, ended_at, epoch floats written
by whichever process recorded them):

1. Sequential. For each executor, --warmup (default 1) untimed jobs, then N (--jobs, default 10) jobs of `sleep 1`
   one at a time: spawn, wait, next. Medians (and min/max) of
       submit->start  started_at - submitted_at
       submit->end    ended_at - submitted_at
       overhead       (submit->end) - 1.0 s
   and, for the breakdown, the spawn call itself (time.time() around `jobs.spawn`; for ray it holds the HTTP
   submit to the Jobs API) and dispatched_at -> started_at.

2. Concurrent. For each executor, M (--concurrent, default 8) `sleep 1` jobs spawned at once with
   jobs.max_concurrency 4 (AGENTKIT_JOBS_MAX_CONCURRENCY=4), then one `jobs.wait` for all: wall = first
   submitted_at -> last ended_at, against the ideal ceil(M / 4) x 1 s (2 s by default); also the medians of
   dispatched_at -> started_at and started_at -> ended_at of those jobs.

How the ray executor's times are taken, which bounds what can be seen: it learns a job's state only from `poll`,
which `jobs.wait` calls every REFRESH_EVERY_S (0.5 s, agentkit/jobs.py). started_at is recorded when a poll
first sees the Ray job RUNNING, and ended_at when a poll sees it ended, so both have the granularity of that
0.5 s poll (up to ~0.5 s late each); a queued ray job is only handed to Ray when a poll frees a slot. The local
executor's supervisor writes started_at / ended_at itself as they happen.

Printed: a table of the medians, local vs ray, with the ratio ray/local, then a GOAL line: ray median sequential
overhead <= 1.0 s -> met / not met. Exit status 1 if the goal is not met or a job did not succeed.

    python bench/ray.py [--jobs 10] [--concurrent 8] [--concurrency 4] [--warmup 1] [--keep]
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

from _common import add_dir_arg, add_keep_arg, drop_agentkit_env, empty_repo, machine, temp_dir

# This file is bench/ray.py and `python bench/ray.py` puts bench/ first on sys.path, where `import ray` (here, in
# agentkit_ray and in Ray itself) would find this file instead of Ray: drop the folder now that _common is in.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

JOB_S = 1.0  # every job is `sleep 1`
GOAL_OVERHEAD_S = 1.0
EXECUTORS = ("local", "ray")

# The defaults are measured: no AGENTKIT_* override reaches this process or the supervisors it starts.
drop_agentkit_env()


def make_repo(path: Path, settings: dict[str, str]):
    """A git repo with one empty commit, the current directory from now on; `settings` (AGENTKIT_* env) stay in
    os.environ for the part."""
    from agentkit.repo import Repo

    empty_repo(path)
    os.chdir(path)
    drop_agentkit_env()
    os.environ.update(settings)
    repo = Repo(path)
    _ = repo.store  # create the DB before anything is timed
    return repo


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bad_jobs(got: list[dict]) -> list[dict]:
    bad = [j for j in got if j["state"] != "succeeded"]
    for j in bad[:5]:
        print(f"    job {j['job_id']} ({j['executor']}): {j['state']} exit_code={j['exit_code']} "
              f"reason={j['reason']!r}")
    return bad


def wait_or_kill(repo, ids: list[int], timeout: float) -> bool:
    """`jobs.wait` for all of ids; on its timeout report it, kill them and return False."""
    from agentkit import jobs
    from agentkit.errors import AgentkitError

    try:
        jobs.wait(repo, ids, timeout=timeout)
        return True
    except AgentkitError as exc:
        print(f"    STUCK: {exc.message}")
        try:
            jobs.kill(repo, ids, grace="1s")
        except Exception as exc2:  # noqa: BLE001 - cleanup must go on
            print(f"    cleanup: jobs.kill failed: {exc2!r}")
        return False


# ---- 1. sequential -----------------------------------------------------------------------------------------

def part_sequential(tmp: Path, executor: str, settings: dict, n: int, warmup: int) -> dict:
    from agentkit import jobs

    repo = make_repo(tmp / f"seq-{executor}", settings)
    cwd = str(repo.root)
    got, spawn_s, ok = [], [], True
    warm = []
    for i in range(warmup + n):
        before = time.time()
        job_id = jobs.spawn(repo, ["sleep", f"{JOB_S:g}"], cwd=cwd, executor=executor)["job_id"]
        took = time.time() - before
        ok = wait_or_kill(repo, [job_id], timeout=60) and ok
        row = jobs.get(repo, job_id)
        if i < warmup:
            warm.append(row)
        else:
            got.append(row)
            spawn_s.append(took)
    repo.close()
    done = [j for j in got if j["started_at"] and j["ended_at"]]
    out = {
        "start": [j["started_at"] - j["submitted_at"] for j in done],
        "end": [j["ended_at"] - j["submitted_at"] for j in done],
        "dispatch_start": [j["started_at"] - j["dispatched_at"] for j in done if j["dispatched_at"]],
        "spawn": spawn_s,
        "warm_end": [j["ended_at"] - j["submitted_at"] for j in warm if j["ended_at"]],
    }
    out["overhead"] = [e - JOB_S for e in out["end"]]
    out["bad"] = len(bad_jobs(warm + got)) + (0 if ok else 1)
    return out


# ---- 2. concurrent -----------------------------------------------------------------------------------------

def part_concurrent(tmp: Path, executor: str, settings: dict, m: int, concurrency: int) -> dict:
    from agentkit import jobs

    repo = make_repo(tmp / f"conc-{executor}",
                     {**settings, "AGENTKIT_JOBS_MAX_CONCURRENCY": str(concurrency)})
    cwd = str(repo.root)
    ids = [jobs.spawn(repo, ["sleep", f"{JOB_S:g}"], cwd=cwd, executor=executor)["job_id"] for _ in range(m)]
    ok = wait_or_kill(repo, ids, timeout=60 + 5 * m)
    got = [jobs.get(repo, i) for i in ids]
    repo.close()
    ends = [j["ended_at"] for j in got if j["ended_at"]]
    wall = max(ends) - min(j["submitted_at"] for j in got) if len(ends) == len(got) else float("nan")
    started = [j for j in got if j["started_at"]]
    return {"wall": wall, "bad": len(bad_jobs(got)) + (0 if ok else 1),
            "dispatch_start": [j["started_at"] - j["dispatched_at"] for j in started if j["dispatched_at"]],
            "run": [j["ended_at"] - j["started_at"] for j in started if j["ended_at"]]}


# ---- report ------------------------------------------------------------------------------------------------

def row(label: str, local: float, ray: float) -> None:
    ratio = ray / local if local > 0 and not math.isnan(ray) else float("nan")
    print(f"   {label:<34} {local:>8.3f} {ray:>8.3f} {ratio:>9.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="sequential `sleep 1` jobs per executor (default 10)")
    parser.add_argument("--concurrent", type=int, default=8, help="concurrent `sleep 1` jobs per executor (default 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs.max_concurrency of the concurrent part "
                        "(default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed sequential jobs first, per executor "
                        "(default 1)")
    add_dir_arg(parser)
    add_keep_arg(parser)
    args = parser.parse_args()
    if min(args.jobs, args.concurrent, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--jobs, --concurrent and --concurrency must be >= 1, --warmup >= 0")

    try:
        import ray
        from agentkit_ray import local_cluster
    except ImportError as exc:
        print(f"ray bench: skipped: cannot import ray / agentkit_ray ({exc}); "
              f"install the plugin: pip install -e plugins/agentkit-ray")
        return 0

    print(f"ray bench: {machine()}, ray {ray.__version__}")
    home = os.getcwd()
    t0 = time.perf_counter()
    cluster = None
    seq, conc = {}, {}
    try:
        with temp_dir("agentkit-bench-ray-", args.keep, args.dir) as tmp:
            started = time.perf_counter()
            cluster = local_cluster.start(head_cpus=2, worker_cpus=[2])
            print(f"local Ray cluster at {cluster.address} (head 2 CPUs + worker 2 CPUs), up in "
                  f"{time.perf_counter() - started:.1f} s (not timed)")
            settings = {"AGENTKIT_EXECUTORS_RAY_ADDRESS": cluster.address}
            for executor in EXECUTORS:
                print(f"1. sequential, {executor}: {args.warmup} warmup + {args.jobs} x `sleep {JOB_S:g}`, "
                      f"one at a time", flush=True)
                seq[executor] = part_sequential(tmp, executor, settings, args.jobs, args.warmup)
            for executor in EXECUTORS:
                print(f"2. concurrent, {executor}: {args.concurrent} x `sleep {JOB_S:g}` at once, "
                      f"max_concurrency {args.concurrency}", flush=True)
                conc[executor] = part_concurrent(tmp, executor, settings, args.concurrent, args.concurrency)
            os.chdir(home)
    finally:
        os.chdir(home)
        if cluster is not None:
            cluster.stop()

    ideal = math.ceil(args.concurrent / args.concurrency) * JOB_S
    loc, ray_ = seq["local"], seq["ray"]
    print()
    print(f"   {'median, seconds':<34} {'local':>8} {'ray':>8} {'ray/local':>10}")
    row(f"sequential ({args.jobs} jobs) submit->start", med(loc["start"]), med(ray_["start"]))
    row("sequential submit->end", med(loc["end"]), med(ray_["end"]))
    row("sequential overhead (end - 1 s)", med(loc["overhead"]), med(ray_["overhead"]))
    row("  spawn call", med(loc["spawn"]), med(ray_["spawn"]))
    row("  dispatched->start", med(loc["dispatch_start"]), med(ray_["dispatch_start"]))
    row(f"concurrent wall ({args.concurrent} jobs, ideal {ideal:g} s)", conc["local"]["wall"], conc["ray"]["wall"])
    row("concurrent wall - ideal", conc["local"]["wall"] - ideal, conc["ray"]["wall"] - ideal)
    row("  concurrent dispatched->start", med(conc["local"]["dispatch_start"]), med(conc["ray"]["dispatch_start"]))
    row("  concurrent start->end", med(conc["local"]["run"]), med(conc["ray"]["run"]))
    for name, figures in seq.items():
        if figures["overhead"]:
            print(f"   {name}: overhead min {min(figures['overhead']):.3f} s, max {max(figures['overhead']):.3f} s; "
                  f"warmup submit->end {', '.join(f'{x:.3f}' for x in figures['warm_end']) or '-'} s")
    bad = sum(f["bad"] for f in (*seq.values(), *conc.values()))
    print(f"   jobs not succeeded (or stuck): {bad}; total {time.perf_counter() - t0:.1f} s")
    overhead = med(ray_["overhead"])
    met = not math.isnan(overhead) and overhead <= GOAL_OVERHEAD_S
    print(f"GOAL ray median overhead <= {GOAL_OVERHEAD_S:g} s per job: {'met' if met else 'not met'} "
          f"({overhead:.3f} s; the issue: 1-2 s)")
    return 0 if met and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
