"""Wall time of `agentkit worktree new SLUG` against a raw `git worktree add -b BRANCH PATH` on a 10,000-file repo.

What it measures: one throwaway repository (10,000 small files in 10x10 nested folders, one commit, written
with `git fast-import`) is built in a temp dir, the managed Redis is started once (`agentkit redis start`, not
timed), then for N rounds both operations run back to back, each timed with time.perf_counter around
subprocess.run of the real command line:

    agentkit worktree new ak-N                       (the console script next to sys.executable)
    git worktree add -b bench/raw-N PATH HEAD        (the same checkout, without agentkit)

The order flips every round so machine noise and cache effects hit both alike, and one untimed warm-up round
runs first. Every round uses fresh slugs/branches and nothing is removed until the end: with the defaults
(7 + 1 rounds) agentkit holds 8 worktrees, inside the band's floor of 20; with more than 20 rounds in all
the band grows past 20 (a `band.grew` step inside the round that crosses it), which is fine but is timed.
Not removing between rounds is deliberate: on ext4 without a journal (this VM's /), creating files right
after deleting tens of thousands makes every create scan the recently deleted inodes (recently_deleted()
in the kernel), which turns a 0.2 s checkout into 3-9 s of system time and buries the comparison.
For the same reason the temp dir defaults to /dev/shm (tmpfs) when it exists; --dir picks another place.
AGENTKIT_* variables are dropped from the environment so the defaults are measured.

Each round also times `python -c "import typer"`: the floor any typer command pays before its work starts,
printed beside the overhead. On tmpfs a checkout is ~70 ms, so that floor alone is ~0.7x of it; on a disk
(`--dir` on ext4) checkouts take 2-3x longer and the same overhead weighs correspondingly less.

Goal: median(agentkit worktree new) / median(git worktree add) <= 1.5x.

    python bench/worktree_new.py [--rounds 7] [--warmup 1] [--files 10000] [--dir DIR] [--keep]
"""

import argparse
import statistics
import sys
import time

from _common import (
    AGENTKIT,
    add_dir_arg,
    add_keep_arg,
    add_rounds_args,
    check_rounds,
    files_repo,
    managed_redis,
    pct,
    require_agentkit,
    temp_dir,
    timed,
)

GOAL = 1.5  # the figure: agentkit worktree new <= 1.5x git worktree add


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds_args(parser, rounds=7)
    parser.add_argument("--files", type=int, default=10_000, help="files in the fixture repo (default 10000)")
    add_dir_arg(parser)
    add_keep_arg(parser, "Redis is stopped anyway")
    args = parser.parse_args()
    check_rounds(parser, args)
    require_agentkit()

    times: dict[str, list[float]] = {"git": [], "agentkit": [], "floor": []}
    with temp_dir("agentkit-bench-wt-", args.keep, args.dir) as tmp:
        repo, raw_root = tmp / "repo", tmp / "raw"
        raw_root.mkdir()
        t0 = time.perf_counter()
        files_repo(repo, args.files)
        print(f"fixture: {args.files} files, one commit, built in {time.perf_counter() - t0:.1f} s at {repo}")
        with managed_redis(repo):
            for i in range(args.warmup + args.rounds):
                slug, raw_path, raw_branch = f"ak-{i}", raw_root / f"raw-{i}", f"bench/raw-{i}"
                ops = {"git": ["git", "worktree", "add", "-q", "-b", raw_branch, raw_path, "HEAD"],
                       "agentkit": [AGENTKIT, "worktree", "new", slug]}
                order = ["git", "agentkit"] if i % 2 == 0 else ["agentkit", "git"]
                sample = {name: timed(ops[name], repo) for name in order}
                sample["floor"] = timed([sys.executable, "-c", "import typer"], repo)
                if i >= args.warmup:
                    for name, secs in sample.items():
                        times[name].append(secs)
                label = "warm-up" if i < args.warmup else f"round {i - args.warmup + 1}"
                print(f"  {label:<9} git {sample['git'] * 1000:7.1f} ms   "
                      f"agentkit {sample['agentkit'] * 1000:7.1f} ms", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["agentkit"] / med["git"]
    print()
    print(f"worktree new on a {args.files}-file repo: {args.rounds} rounds (+{args.warmup} warm-up), "
          f"order alternated, fresh slugs (kept until the end), temp dir under {tmp.parent}")
    print(f"{'':<24}{'median':>10}{'p90':>10}")
    for name, label in (("git", "git worktree add"), ("agentkit", "agentkit worktree new")):
        print(f"{label:<24}{med[name] * 1000:8.1f}ms{pct(times[name], 0.9) * 1000:8.1f}ms")
    print(f"overhead (median): {(med['agentkit'] - med['git']) * 1000:.1f} ms, of which "
          f"{med['floor'] * 1000:.1f} ms is starting Python with typer (`python -c 'import typer'`)")
    print(f"ratio of medians (agentkit / git): {ratio:.2f}x")
    print(f"goal <= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
