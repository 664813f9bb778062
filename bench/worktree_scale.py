"""Whether `agentkit worktree new`, `worktree list` and `snapshot` slow down as worktrees pile up in one repo.

What it measures: one throwaway repository (--files small files, default 1,000, in 10x10 nested folders, one
commit, written with `git fast-import`) is built in a temp dir (default /dev/shm, see bench/worktree_new.py for
why), the managed Redis is started (`agentkit redis start`) and provisioned to 256 databases once
(`agentkit scale --provision --target 256 --yes`, one restart), none of it timed. Then for each K in --counts
(default 10, 50, 200), ascending, the same repo grows to K agentkit worktrees (`agentkit worktree new wt-NNN`,
untimed; their number is printed) and at that K, in --warmup (default 1, untimed) + --rounds (default 5)
rounds, each timed with time.perf_counter around subprocess.run of the real command line:

    python -m agentkit.cli worktree new extra-K-I --json     (sys.executable; the JSON is checked: slug, path)
    git worktree add -q -b bench/raw-K-I PATH HEAD            (the same checkout without agentkit, same K)

in an order that flips every round, after which both are removed again, untimed (`agentkit worktree remove
extra-K-I --force`; `git worktree remove --force PATH` and `git branch -D`), so every round sees exactly K.
Then, in as many rounds, `python -m agentkit.cli worktree list --json` (checked: exactly K worktrees, all
active) and `python -m agentkit.cli snapshot --json` (checked: K worktrees) are timed the same way.
The CLI runs as `python -m agentkit.cli` of this interpreter, so PYTHONPATH picks the agentkit under test for
the subprocesses too; AGENTKIT_* variables are dropped from their environment, so the defaults are measured
and the state lives in the fixture's own .agents/. The managed redis-server is stopped at the end
(`agentkit redis stop`), whatever happened, and its status is checked and printed.

The band (floor 20, step 10) is full at K=50 and K=200 but not at K=10, so at 50 and 200 each timed `new` also
grows the band by one step (and the untimed remove shrinks it back). That is what `new` costs at those K (Redis
is not restarted for it), and it is reported as is.

Printed per K: median ms of `worktree new`, its ratio to the smallest K, median ms of `git worktree add` and its
ratio (whether git itself slows down), median ms of `worktree list` and `snapshot`.
Goals (printed as met / not met; the exit status stays 0 unless a command fails):
    new@200 <= 1.2x new@10                  (largest K against smallest, with other --counts)
    list and snapshot < 1000 ms at 200      (at the largest K)

    python bench/worktree_scale.py [--counts 10,50,200] [--rounds 5] [--warmup 1] [--files 1000] [--dir DIR]
                                   [--keep]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    AGENTKIT_CLI,
    ENV,
    add_dir_arg,
    add_keep_arg,
    add_rounds_args,
    check_rounds,
    files_repo,
    machine,
    managed_redis,
    run,
    temp_dir,
    timed_run,
)

PROVISION = 256  # physical Redis databases; DB 0 is reserved, so 255 worktrees fit
NEW_GOAL = 1.2
READ_GOAL_MS = 1000.0


def cli(*args: str) -> list:
    return [*AGENTKIT_CLI, *args]


def grow(repo: Path, have: int, want: int) -> float:
    """Create agentkit worktrees wt-HAVE .. wt-(WANT-1), untimed as a benchmark; returns the seconds taken."""
    t0 = time.perf_counter()
    for n in range(have, want):
        run(cli("worktree", "new", f"wt-{n:03d}", "--json"), repo)
    return time.perf_counter() - t0


def check_listing(worktrees: list, k: int, what: str) -> None:
    statuses = sorted({w["status"] for w in worktrees})
    if len(worktrees) != k or statuses != ["active"]:
        raise SystemExit(f"{what}: {len(worktrees)} worktrees with statuses {statuses}, expected {k} active")


def measure_new(repo: Path, raw_root: Path, k: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """`worktree new` and `git worktree add` at K worktrees, both removed again (untimed) after every round."""
    times: dict[str, list[float]] = {"new": [], "git": []}
    for i in range(warmup + rounds):
        slug, raw_path, raw_branch = f"extra-{k}-{i}", raw_root / f"raw-{k}-{i}", f"bench/raw-{k}-{i}"
        ops = {"git": ["git", "worktree", "add", "-q", "-b", raw_branch, raw_path, "HEAD"],
               "new": cli("worktree", "new", slug, "--json")}
        sample = {}
        for name in (["git", "new"] if i % 2 == 0 else ["new", "git"]):
            sample[name], done = timed_run(ops[name], repo)
            if name == "new":
                made = json.loads(done.stdout)
                if made.get("slug") != slug or not Path(made["path"]).is_dir():
                    raise SystemExit(f"worktree new {slug}: unexpected answer {done.stdout[:200]!r}")
        run(cli("worktree", "remove", slug, "--force"), repo)
        run(["git", "worktree", "remove", "--force", raw_path], repo)
        run(["git", "branch", "-q", "-D", raw_branch], repo)
        if i >= warmup:
            for name, secs in sample.items():
                times[name].append(secs)
        label = "warm-up" if i < warmup else f"round {i - warmup + 1}"
        print(f"  K={k:<4} {label:<9} new {sample['new'] * 1000:7.1f} ms   git add {sample['git'] * 1000:7.1f} ms",
              flush=True)
    return times


def measure_reads(repo: Path, k: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """`worktree list --json` and `snapshot --json` at K worktrees, their answers checked."""
    times: dict[str, list[float]] = {"list": [], "snapshot": []}
    for i in range(warmup + rounds):
        t_list, done = timed_run(cli("worktree", "list", "--json"), repo)
        check_listing(json.loads(done.stdout)["worktrees"], k, "worktree list")
        t_snap, done = timed_run(cli("snapshot", "--json"), repo)
        check_listing(json.loads(done.stdout)["worktrees"], k, "snapshot")
        if i >= warmup:
            times["list"].append(t_list)
            times["snapshot"].append(t_snap)
        label = "warm-up" if i < warmup else f"round {i - warmup + 1}"
        print(f"  K={k:<4} {label:<9} list {t_list * 1000:7.1f} ms   snapshot {t_snap * 1000:7.1f} ms", flush=True)
    return times


def redis_stopped(repo: Path) -> str:
    done = subprocess.run([str(c) for c in cli("redis", "status", "--json")], cwd=repo, capture_output=True,
                          env=ENV)
    try:
        running = json.loads(done.stdout)["running"]
    except (ValueError, KeyError, TypeError):
        return f"unknown (redis status exited {done.returncode})"
    return "NO, still running" if running else "yes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,50,200",
                        help="comma-separated worktree counts K to measure at (default 10,50,200)")
    add_rounds_args(parser, rounds=5)
    parser.add_argument("--files", type=int, default=1000, help="files in the fixture repo (default 1000)")
    add_dir_arg(parser)
    add_keep_arg(parser, "Redis is stopped anyway")
    args = parser.parse_args()
    check_rounds(parser, args)
    counts = sorted({int(x) for x in args.counts.split(",") if x.strip()})
    if not counts or counts[0] < 1 or args.files < 1:
        parser.error("--counts needs positive numbers and --files must be at least 1")
    if counts[-1] + 1 > PROVISION - 1:
        parser.error(f"--counts: at most {PROVISION - 2} (DB 0 is reserved and one extra worktree is made per round)")

    rows: dict[int, dict[str, list[float]]] = {}
    with temp_dir("agentkit-bench-wtscale-", args.keep, args.dir) as tmp:
        repo, raw_root = tmp / "repo", tmp / "raw"
        raw_root.mkdir()
        t0 = time.perf_counter()
        files_repo(repo, args.files)
        print(f"fixture: {args.files} files, one commit, built in {time.perf_counter() - t0:.1f} s at {repo}")
        where = run([sys.executable, "-c", "import agentkit; print(agentkit.__file__)"], repo).stdout
        print(f"agentkit under test: {Path(where.decode().strip()).parent}")
        try:
            with managed_redis(repo, cli=AGENTKIT_CLI):
                run(cli("scale", "--provision", "--target", str(PROVISION), "--yes", "--json"), repo)
                print(f"managed Redis started and provisioned to {PROVISION} databases", flush=True)
                have = 0
                for k in counts:
                    took = grow(repo, have, k)
                    print(f"  K={k:<4} grown from {have} to {k} worktrees in {took:.1f} s (untimed)", flush=True)
                    have = k
                    rows[k] = {**measure_new(repo, raw_root, k, args.rounds, args.warmup),
                               **measure_reads(repo, k, args.rounds, args.warmup)}
        finally:
            print(f"managed Redis stopped: {redis_stopped(repo)}")

    med = {k: {name: statistics.median(v) * 1000 for name, v in r.items()} for k, r in rows.items()}
    lo, hi = counts[0], counts[-1]
    print()
    print(f"worktree scale: {args.files}-file repo, K agentkit worktrees present, {args.rounds} rounds "
          f"(+{args.warmup} warm-up) per K, medians; temp dir under {tmp.parent}; {machine()}")
    print(f"{'K':>5} {'new ms':>8} {f'new/new@{lo}':>11} {'git add ms':>10} {f'git/git@{lo}':>11} "
          f"{'list ms':>8} {'snapshot ms':>11}")
    for k in counts:
        m = med[k]
        print(f"{k:>5} {m['new']:>8.1f} {m['new'] / med[lo]['new']:>10.2f}x {m['git']:>10.1f} "
              f"{m['git'] / med[lo]['git']:>10.2f}x {m['list']:>8.1f} {m['snapshot']:>11.1f}")
    ratio = med[hi]["new"] / med[lo]["new"]
    print(f"goal: new@{hi} <= {NEW_GOAL}x new@{lo}: {'met' if ratio <= NEW_GOAL else 'not met'} ({ratio:.2f}x)")
    reads_ok = med[hi]["list"] < READ_GOAL_MS and med[hi]["snapshot"] < READ_GOAL_MS
    print(f"goal: list and snapshot < {READ_GOAL_MS:.0f} ms at {hi}: {'met' if reads_ok else 'not met'} "
          f"(list {med[hi]['list']:.0f} ms, snapshot {med[hi]['snapshot']:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
