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

Goal: median(agentkit worktree new) / median(git worktree add) <= 1.2x.

    python bench/worktree_new.py [--rounds 7] [--warmup 1] [--files 10000] [--dir DIR] [--keep]
"""

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.2
AGENTKIT = Path(sys.executable).parent / "agentkit"


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTKIT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    return env


ENV = child_env()


def run(cmd: list, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, input=stdin, capture_output=True, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{done.stderr.decode(errors='replace').strip()}")
    return done


def timed(cmd: list, cwd: Path) -> float:
    start = time.perf_counter()
    run(cmd, cwd)
    return time.perf_counter() - start


def build_repo(repo: Path, files: int) -> None:
    """`files` small files under a/b/ folders (10 x 10), one commit on main, checked out."""
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo)
    per_dir = max(1, math.ceil(files / 100))
    chunks = [b"commit refs/heads/main\ncommitter bench <bench@example.com> 1700000000 +0000\n"
              b"data 16\n10k-file fixture\n"]
    for i in range(files):
        top, sub, n = i // (per_dir * 10), (i // per_dir) % 10, i % per_dir
        body = f"# file {i}\nvalue = {i * 7919 % 100003}\n".encode()
        chunks.append(f"M 100644 inline pkg{top:02d}/mod{sub:02d}/f{n:04d}.py\ndata {len(body)}\n".encode()
                      + body + b"\n")
    chunks.append(b"done\n")
    run(["git", "fast-import", "--quiet", "--done"], repo, stdin=b"".join(chunks))
    run(["git", "reset", "-q", "--hard", "main"], repo)
    count = len(run(["git", "ls-files"], repo).stdout.splitlines())
    if count != files:
        raise SystemExit(f"fixture has {count} files, expected {files}")


def default_dir() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--files", type=int, default=10_000, help="files in the fixture repo (default 10000)")
    parser.add_argument("--dir", type=Path, default=default_dir(),
                        help="where to make the temp dir (default /dev/shm if present, else the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (Redis is stopped anyway)")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    if not AGENTKIT.is_file():
        raise SystemExit(f"no agentkit console script at {AGENTKIT}; run with the python of the venv "
                         "agentkit is installed in")

    tmp = Path(tempfile.mkdtemp(prefix="agentkit-bench-wt-", dir=args.dir))
    repo, raw_root = tmp / "repo", tmp / "raw"
    raw_root.mkdir()
    redis_started = False
    times: dict[str, list[float]] = {"git": [], "agentkit": []}
    try:
        t0 = time.perf_counter()
        build_repo(repo, args.files)
        print(f"fixture: {args.files} files, one commit, built in {time.perf_counter() - t0:.1f} s at {repo}")
        run([AGENTKIT, "redis", "start"], repo)
        redis_started = True

        for i in range(args.warmup + args.rounds):
            slug, raw_path, raw_branch = f"ak-{i}", raw_root / f"raw-{i}", f"bench/raw-{i}"
            ops = {"git": ["git", "worktree", "add", "-q", "-b", raw_branch, raw_path, "HEAD"],
                   "agentkit": [AGENTKIT, "worktree", "new", slug]}
            order = ["git", "agentkit"] if i % 2 == 0 else ["agentkit", "git"]
            sample = {name: timed(ops[name], repo) for name in order}
            if i >= args.warmup:
                for name, secs in sample.items():
                    times[name].append(secs)
            label = "warm-up" if i < args.warmup else f"round {i - args.warmup + 1}"
            print(f"  {label:<9} git {sample['git'] * 1000:7.1f} ms   agentkit {sample['agentkit'] * 1000:7.1f} ms",
                  flush=True)
    finally:
        if redis_started:
            subprocess.run([str(AGENTKIT), "redis", "stop"], cwd=repo, capture_output=True, env=ENV)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["agentkit"] / med["git"]
    print()
    print(f"worktree new on a {args.files}-file repo: {args.rounds} rounds (+{args.warmup} warm-up), "
          f"order alternated, fresh slugs (kept until the end), temp dir under {tmp.parent}")
    print(f"{'':<24}{'median':>10}{'p90':>10}")
    for name, label in (("git", "git worktree add"), ("agentkit", "agentkit worktree new")):
        print(f"{label:<24}{med[name] * 1000:8.1f}ms{p90(times[name]) * 1000:8.1f}ms")
    print(f"overhead (median): {(med['agentkit'] - med['git']) * 1000:.1f} ms")
    print(f"ratio of medians (agentkit / git): {ratio:.2f}x")
    print(f"goal <= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
