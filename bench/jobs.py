"""Supervised jobs: freed-slot-to-next-start latency, per-job overhead vs a plain thread pool, orphans after kill.

Each part runs in its own throwaway git repo (`git init`, one empty commit) in a temp dir, with its state in that
repo's .agents/. AGENTKIT_* variables are dropped from the environment first, so the defaults are measured; the
few settings a part needs are then put in os.environ before its Repo is made (the detached supervisors inherit
them, so they enforce the same limits). Jobs are spawned through the core API (`agentkit.jobs.spawn`) with the
local executor, and waited for with `jobs.wait`. Times come from the job rows (submitted_at, dispatched_at,
started_at, ended_at: time.time() in whichever process wrote them), so they do not include `jobs.wait`'s own
polling delay. `jobs.wait` has no timeout, so the bench polls the rows itself (every 50 ms, as `jobs.wait` does)
and calls `jobs.wait` once all have ended; if no job starts or ends for --stall seconds (default 15) the part is
reported as STUCK, with the unfinished rows and the tail of .agents/jobs/supervisor.log, and its jobs are killed.

1. Freed slot -> next start (jobs.max_concurrency = C, default 2). C long jobs (`sleep 0.5`) fill every slot,
   then K (default 40) short ones (`sleep 0.05`) are spawned and queue. A supervisor that finishes a job takes
   the next queued one itself. After all end, the K queued starts (sorted by started_at) are paired in order
   with the first K ends (sorted by ended_at): each start needs a freed slot, and the i-th start takes the
   i-th slot freed. latency = started_at - that ended_at. Also shown: the same gap measured along each
   supervisor's own chain of jobs (same supervisor_pid), and its two halves: ended_at -> dispatched_at (finish,
   then the FIFO reservation) and dispatched_at -> started_at (env, Popen of the command, the `started` write).
   Goal: p50 < 100 ms (the reference polls its queue every 5 s).

2. Per-job overhead. N (default 200) jobs of `true` at jobs.max_concurrency 10 (jobs.max_queue_depth raised to
   1000 so every one is accepted): submit all, then wait for all; wall = first submit -> last ended_at. Against
   the same N runs of subprocess.run(["true"]) in concurrent.futures.ThreadPoolExecutor(10), in the same run.
   Printed: both walls, ms per job, ratio agentkit / pool, and where agentkit's time goes (submit loop, median
   queue wait, median started -> ended of a job that does nothing, median freed slot -> next start). Reported,
   not graded; the goal is only that every job succeeds.

3. Orphans after killing whole trees. M (default 50) jobs at jobs.max_concurrency M, each

       sh -c 'sleep 1000.<nonce> & setsid sleep 1000.<nonce> & (sleep 1000.<nonce> &); sleep 1000.<nonce>'

   (a background child, a setsid daemon, a double-forked orphan and a foreground child), with --env
   MARK=bench-<nonce>. Once every job runs and all 4*M sleeps exist, `jobs.kill(repo, ids, grace="2s")`;
   kill wall = kill call -> last ended_at (and -> `jobs.wait` return). Then psutil scans every process for the
   nonce in its command line or MARK in its environment: survivors are orphans. Goal: 0 orphans, every job
   recorded as killed. Whatever survives is killed at the end anyway, and supervisors still alive a few
   seconds later are reported.

Exit status 1 if a goal is not met or a job did not end as expected.

    python bench/jobs.py [--slots 2] [--queued 40] [--long 0.5] [--short 0.05] [--overhead-jobs 200]
                         [--overhead-concurrency 10] [--trees 50] [--grace 2s] [--only 1,2,3] [--keep]
"""

import argparse
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import add_keep_arg, drop_agentkit_env, empty_repo, machine, pct, temp_dir

LATENCY_GOAL_MS = 100.0

# The defaults are measured: no AGENTKIT_* override reaches this process or the supervisors it starts.
drop_agentkit_env()


def make_repo(path: Path, settings: dict[str, str]):
    """A git repo with one empty commit; `settings` (AGENTKIT_* env) stay in os.environ for the part."""
    from agentkit.repo import Repo

    empty_repo(path)
    drop_agentkit_env()
    os.environ.update(settings)
    repo = Repo(path)
    _ = repo.store  # create the DB before anything is timed
    return repo


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def rows(repo, ids: list[int]) -> list[dict]:
    from agentkit import jobs

    return [jobs.get(repo, i) for i in ids]


def supervisor_log(repo) -> str:
    path = repo.paths.agents / "jobs" / "supervisor.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_all(repo, ids: list[int], stall_s: float, what: str) -> tuple[list[dict], list[dict]]:
    """`jobs.wait` has no timeout: poll the rows (as it does, every 50 ms) and give up once no job has started
    or ended for `stall_s` seconds. Returns (rows, stuck rows); stuck jobs are reported and killed."""
    from agentkit import jobs

    last, last_change = None, time.monotonic()
    while True:
        got = rows(repo, ids)
        progress = (sum(1 for j in got if j["started_at"]), sum(1 for j in got if j["state"] in jobs.FINISHED))
        if progress[1] == len(got):
            jobs.wait(repo, ids)  # returns at once; the API path is exercised all the same
            return got, []
        if progress != last:
            last, last_change = progress, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            break
        time.sleep(0.05)
    stuck = [j for j in got if j["state"] not in jobs.FINISHED]
    states = Counter(j["state"] for j in stuck)
    print(f"   STUCK ({what}): no job started or ended for {stall_s:g} s; {progress[0]} started, {progress[1]} "
          f"ended of {len(got)}; unfinished: {dict(states)}")
    for j in [j for j in stuck if j["state"] == "running"][:5]:
        print(f"    job {j['job_id']}: running, dispatched_at {'set' if j['dispatched_at'] else 'None'}, "
              f"started_at {j['started_at']}, supervisor_pid {j['supervisor_pid']}, pid {j['pid']}")
    log = supervisor_log(repo).strip()
    print("    supervisor.log: " + ("(empty)" if not log else ""))
    for line in log.splitlines()[-10:]:
        print(f"      {line}")
    try:
        jobs.kill(repo, [j["job_id"] for j in stuck], grace="1s")
    except Exception as exc:  # noqa: BLE001 - cleanup must go on
        print(f"    cleanup: jobs.kill failed: {exc!r}")
    return got, stuck


def report_bad(repo, got: list[dict], expected: str) -> int:
    bad = [j for j in got if j["state"] != expected]
    for j in bad[:5]:
        print(f"    job {j['job_id']}: {j['state']} exit_code={j['exit_code']} signal={j['signal']} "
              f"reason={j['reason']!r}")
    log = supervisor_log(repo).strip()
    if bad and log:
        print("    supervisor.log (last lines):")
        for line in log.splitlines()[-10:]:
            print(f"      {line}")
    return len(bad)


# ---- 1. freed slot -> next start --------------------------------------------------------------------------

def part_latency(tmp: Path, slots: int, queued: int, long_s: float, short_s: float, stall_s: float) -> bool:
    from agentkit import jobs

    repo = make_repo(tmp / "latency", {"AGENTKIT_JOBS_MAX_CONCURRENCY": str(slots)})
    cwd = str(repo.root)
    ids = [jobs.spawn(repo, ["sleep", f"{long_s:g}"], cwd=cwd)["job_id"] for _ in range(slots)]
    states = []
    for _ in range(queued):
        job = jobs.spawn(repo, ["sleep", f"{short_s:g}"], cwd=cwd)
        ids.append(job["job_id"])
        states.append(job["state"])
    submitted_last = time.time()
    print(f"1. freed slot -> next start: {slots} x `sleep {long_s:g}` then {queued} x `sleep {short_s:g}`, "
          f"max_concurrency {slots}")
    got, stuck = wait_all(repo, ids, stall_s, "part 1")
    got = sorted(got, key=lambda j: j["job_id"])
    bad = report_bad(repo, [j for j in got if j not in stuck], "succeeded")

    first_end = min(j["ended_at"] or math.inf for j in got)
    from_queue = sorted((j for j in got[slots:] if j["started_at"]), key=lambda j: j["started_at"])
    ends = sorted(j["ended_at"] for j in got if j["ended_at"])[:len(from_queue)]
    from_queue = from_queue[:len(ends)]
    lat = [j["started_at"] - e for j, e in zip(from_queue, ends, strict=True)]
    # along each supervisor's chain: the job it ran before this one
    chain, halves_a, halves_b = [], [], []
    by_sup: dict[int, list[dict]] = {}
    for j in got:
        if j["started_at"] and j["ended_at"]:
            by_sup.setdefault(j["supervisor_pid"], []).append(j)
    for run in by_sup.values():
        run.sort(key=lambda j: j["started_at"])
        for prev, nxt in zip(run, run[1:], strict=False):
            chain.append(nxt["started_at"] - prev["ended_at"])
            halves_a.append(nxt["dispatched_at"] - prev["ended_at"])
            halves_b.append(nxt["started_at"] - nxt["dispatched_at"])
    late_submits = sum(1 for j in got[slots:] if j["submitted_at"] > first_end)
    repo.close()

    print(f"   queued at submit: {states.count('queued')}/{queued}; submitted after the first slot freed: "
          f"{late_submits}; submit loop ended {ms(submitted_last - got[0]['submitted_at'])} ms after the first "
          f"submit; first end at +{ms(first_end - got[0]['submitted_at'])} ms")
    print(f"   supervisors seen: {len(by_sup)} (for {len(got)} jobs); stuck: {len(stuck)}; "
          f"ended but not succeeded: {bad}")
    if not lat:
        print("   latency: no queued job started, nothing to measure")
        print(f"   goal p50 < {LATENCY_GOAL_MS:.0f} ms: not met (no measurement)")
        return False
    print(f"   latency (in-order pairing, {len(lat)} starts): p50 {ms(pct(lat, 0.5))} ms, p90 {ms(pct(lat, 0.9))} ms, "
          f"p99 {ms(pct(lat, 0.99))} ms, max {ms(max(lat))} ms, min {ms(min(lat))} ms")
    if chain:
        print(f"   latency (same supervisor, {len(chain)} hand-overs): p50 {ms(pct(chain, 0.5))} ms, "
              f"p99 {ms(pct(chain, 0.99))} ms; of which ended -> dispatched p50 {ms(pct(halves_a, 0.5))} ms, "
              f"dispatched -> started p50 {ms(pct(halves_b, 0.5))} ms")
    p50 = pct(lat, 0.5) * 1000
    met = p50 < LATENCY_GOAL_MS
    print(f"   goal p50 < {LATENCY_GOAL_MS:.0f} ms: {'met' if met else 'not met'} "
          f"(the reference polls its queue every 5 s: ~2500 ms on average, up to 5000 ms)")
    return met and bad == 0 and not stuck


# ---- 2. per-job overhead ----------------------------------------------------------------------------------

def part_overhead(tmp: Path, n: int, conc: int, stall_s: float) -> bool:
    from agentkit import jobs

    # the baseline first, with the machine as quiet as we leave it
    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        codes = list(pool.map(lambda _: subprocess.run(["true"]).returncode, range(n)))
    pool_wall = time.perf_counter() - t0
    pool_bad = sum(1 for c in codes if c != 0)

    repo = make_repo(tmp / "overhead", {"AGENTKIT_JOBS_MAX_CONCURRENCY": str(conc),
                                        "AGENTKIT_JOBS_MAX_QUEUE_DEPTH": "1000"})
    cwd = str(repo.root)
    t_first = time.time()
    ids = [jobs.spawn(repo, ["true"], cwd=cwd)["job_id"] for _ in range(n)]
    t_submitted = time.time()
    print(f"2. per-job overhead: {n} x `true`, concurrency {conc}")
    got, stuck = wait_all(repo, ids, stall_s, "part 2")
    t_waited = time.time()
    got = sorted(got, key=lambda j: j["job_id"])
    bad = report_bad(repo, [j for j in got if j not in stuck], "succeeded")
    done = [j for j in got if j["started_at"] and j["ended_at"]]
    repo.close()
    print(f"   thread pool({conc}):  wall {pool_wall:.2f} s, {pool_wall / n * 1000:.2f} ms/job; non-zero: {pool_bad}")
    if stuck or not done:
        print(f"   agentkit: {len(done)} of {n} jobs ran, {len(stuck)} stuck: no wall time or ratio to report")
        return False
    last_end = max(j["ended_at"] for j in got)
    wall = last_end - t_first
    queue_wait = [j["started_at"] - j["submitted_at"] for j in got]
    run_s = [j["ended_at"] - j["started_at"] for j in got]
    dispatch_to_start = [j["started_at"] - j["dispatched_at"] for j in got]
    sups = Counter(j["supervisor_pid"] for j in got)
    chain = []
    for pid in sups:
        run = sorted((j for j in got if j["supervisor_pid"] == pid), key=lambda j: j["started_at"])
        chain += [b["started_at"] - a["ended_at"] for a, b in zip(run, run[1:], strict=False)]

    print(f"   agentkit:          wall {wall:.2f} s (first submit -> last end), {wall / n * 1000:.1f} ms/job; "
          f"not succeeded: {bad}")
    print(f"   ratio agentkit / pool: {wall / pool_wall:.1f}x; agentkit extra per job: "
          f"{(wall - pool_wall) / n * 1000:.1f} ms wall, ~{(wall - pool_wall) / n * conc * 1000:.0f} ms per slot")
    print(f"   where it goes: submit loop {t_submitted - t_first:.2f} s ({(t_submitted - t_first) / n * 1000:.1f} "
          f"ms/spawn); wait returned {ms(t_waited - last_end)} ms after the last end; "
          f"{len(sups)} supervisors for {n} jobs")
    print(f"   per job p50/p99: started -> ended (a job that does nothing) {ms(pct(run_s, 0.5))}/"
          f"{ms(pct(run_s, 0.99))} ms; dispatched -> started {ms(pct(dispatch_to_start, 0.5))}/"
          f"{ms(pct(dispatch_to_start, 0.99))} ms; freed slot -> next start (same supervisor) "
          f"{ms(pct(chain, 0.5))}/{ms(pct(chain, 0.99))} ms; submitted -> started {ms(pct(queue_wait, 0.5))}/"
          f"{ms(pct(queue_wait, 0.99))} ms")
    return bad == 0 and pool_bad == 0


# ---- 3. orphans after killing whole trees -----------------------------------------------------------------

def marked(nonce: str) -> list:
    import psutil

    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if any(nonce in part for part in proc.cmdline()) or proc.environ().get("MARK") == f"bench-{nonce}":
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_marked(nonce: str) -> int:
    import psutil

    left = marked(nonce)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    return len(left)


def part_orphans(tmp: Path, m: int, grace: str, stall_s: float) -> bool:
    from agentkit import jobs, procs

    nonce = f"{random.randrange(10**8):08d}"
    dur = f"1000.{nonce}"
    script = f"sleep {dur} & setsid sleep {dur} & (sleep {dur} &); sleep {dur}"
    repo = make_repo(tmp / "orphans", {"AGENTKIT_JOBS_MAX_CONCURRENCY": str(m)})
    ids: list[int] = []
    ok = True
    try:
        t0 = time.time()
        ids = [jobs.spawn(repo, ["sh", "-c", script], cwd=str(repo.root), env=[f"MARK=bench-{nonce}"])["job_id"]
               for _ in range(m)]
        t_spawned = time.time()
        sleeps, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline:
            got = rows(repo, ids)
            sleeps = [p for p in marked(nonce) if p.name() == "sleep"]
            if all(j["state"] == "running" and j["pid"] for j in got) and len(sleeps) >= 4 * m:
                break
            time.sleep(0.2)
        t_ready = time.time()
        running = sum(1 for j in rows(repo, ids) if j["state"] == "running" and j["pid"])
        tree = len(marked(nonce))
        if running < m or len(sleeps) < 4 * m:
            print(f"   WARNING: only {running}/{m} running and {len(sleeps)}/{4 * m} sleeps after 120 s")
            ok = False

        k0 = time.time()
        jobs.kill(repo, ids, grace=grace)
        k_call = time.time()
        got, stuck = wait_all(repo, ids, stall_s, "part 3, after the kill")
        k_waited = time.time()
        orphans = marked(nonce)
        last_end = max(j["ended_at"] or 0 for j in got)
        states = Counter(j["state"] for j in got)
        reasons = Counter((j["reason"] or "").split(";")[0] for j in got)
        bad = report_bad(repo, got, "killed")
        ends = sorted(j["ended_at"] - k0 for j in got if j["ended_at"]) or [math.nan]

        time.sleep(3)
        sups_alive = sum(1 for j in got if procs.alive(j["supervisor_pid"], j["supervisor_started"]))
        late = marked(nonce)

        print(f"3. orphans after killing {m} trees (sh + background + setsid + double-fork + foreground sleep), "
              f"grace {grace}")
        print(f"   setup: spawn loop {t_spawned - t0:.2f} s, all running with {len(sleeps)} sleeps "
              f"({tree} marked processes) after {t_ready - t0:.2f} s")
        print(f"   kill: jobs.kill returned in {ms(k_call - k0)} ms; last job ended {ms(last_end - k0)} ms after the "
              f"kill call (first {ms(ends[0])} ms, p50 {ms(pct(ends, 0.5))} ms); jobs.wait returned at "
              f"+{ms(k_waited - k0)} ms")
        print(f"   states: {dict(states)}; reasons: {dict(reasons)}")
        print(f"   orphans right after the last job ended: {len(orphans)}"
              + (f" ({', '.join(sorted(Counter(p.name() for p in orphans)))})" if orphans else "")
              + f"; 3 s later: {len(late)}; supervisors still alive 3 s later: {sups_alive}")
        met = not orphans
        print(f"   goal 0 orphans: {'met' if met else 'not met'}")
        ok = ok and met and bad == 0 and not stuck and not late and sups_alive == 0
    finally:
        try:
            live = [j["job_id"] for j in rows(repo, ids) if j["state"] in ("queued", "running")]
            if live:
                jobs.kill(repo, live, grace="1s")
        except Exception as exc:  # noqa: BLE001 - cleanup must go on
            print(f"   cleanup: jobs.kill failed: {exc!r}")
        killed = kill_marked(nonce)
        if killed:
            print(f"   cleanup: killed {killed} leftover marked process(es)")
        repo.close()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=2, help="part 1: max concurrency C (default 2)")
    parser.add_argument("--queued", type=int, default=40, help="part 1: short jobs that queue, K (default 40)")
    parser.add_argument("--long", type=float, default=0.5, help="part 1: seconds of each long job (default 0.5)")
    parser.add_argument("--short", type=float, default=0.05, help="part 1: seconds of each short job (default 0.05)")
    parser.add_argument("--overhead-jobs", type=int, default=200, help="part 2: jobs of `true` (default 200)")
    parser.add_argument("--overhead-concurrency", type=int, default=10, help="part 2: concurrency (default 10)")
    parser.add_argument("--trees", type=int, default=50, help="part 3: process trees to kill (default 50)")
    parser.add_argument("--grace", default="2s", help="part 3: kill grace (default 2s)")
    parser.add_argument("--stall", type=float, default=15, help="give up waiting when no job started or ended "
                        "for this many seconds (default 15; jobs.wait itself has no timeout)")
    parser.add_argument("--only", default="1,2,3", help="parts to run, comma-separated (default 1,2,3)")
    add_keep_arg(parser, "with .agents/jobs/supervisor.log")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if min(args.slots, args.queued, args.overhead_jobs, args.overhead_concurrency, args.trees) < 1:
        parser.error("counts must be at least 1")

    results = {}
    with temp_dir("agentkit-bench-jobs-", args.keep) as tmp:
        print(f"jobs bench: {machine()}")
        t0 = time.perf_counter()
        try:
            if "1" in parts:
                results["latency"] = part_latency(tmp, args.slots, args.queued, args.long, args.short, args.stall)
            if "2" in parts:
                results["overhead"] = part_overhead(tmp, args.overhead_jobs, args.overhead_concurrency, args.stall)
            if "3" in parts:
                results["orphans"] = part_orphans(tmp, args.trees, args.grace, args.stall)
        finally:
            drop_agentkit_env()
    print(f"total {time.perf_counter() - t0:.1f} s; " + ", ".join(f"{k}: {'ok' if v else 'NOT ok'}"
                                                              for k, v in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
