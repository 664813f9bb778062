"""Cold start of `agentkit snapshot --json` and `agentkit scale status --json` against `python -c "import typer"`.

What it measures: a small throwaway repository with 3 agentkit worktrees (managed Redis running, started before
anything is timed) is set up in a temp dir; then for R rounds these run as fresh processes, interleaved (the
order rotates every round so machine noise hits all alike), each timed with time.perf_counter around
subprocess.run:

    python -c "import typer"             the baseline: an interpreter plus the CLI framework, nothing else
    agentkit snapshot --json             the console script next to sys.executable, in the repo
    agentkit scale status --json
    python -c "pass"                     shown for reference only (the bare interpreter floor)

One untimed warm-up round runs first, so .pyc files and the page cache are warm: "cold" means a new process,
not a cold disk. It also runs `python -X importtime -m agentkit snapshot --json` once and reports which of
redis, rich, sqlite_utils, psutil and yaml that command imported (a JSON snapshot needs none of them in
principle), plus its costliest imports. AGENTKIT_* variables are dropped from the environment so the defaults
are measured.

Goal: median(command) / median(import typer) <= 1.5x, for each of the two commands.

    python bench/cold_start.py [--rounds 15] [--warmup 1] [--top 12] [--dir DIR] [--keep]
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

GOAL = 1.5
AGENTKIT = Path(sys.executable).parent / "agentkit"
WATCHED = ["redis", "rich", "sqlite_utils", "psutil", "yaml"]


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTKIT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    return env


ENV = child_env()


def run(cmd: list, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(map(str, cmd))}\n{done.stderr.strip()}")
    return done


def timed(cmd: list, cwd: Path) -> float:
    start = time.perf_counter()
    run(cmd, cwd)
    return time.perf_counter() - start


def default_dir() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank


def import_profile(repo: Path) -> list[tuple[int, int, str]]:
    """(cumulative us, nesting depth, module) for every import `python -m agentkit snapshot --json` makes."""
    done = run([sys.executable, "-X", "importtime", "-m", "agentkit", "snapshot", "--json"], repo)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        rows.append((int(cumulative), (len(name) - len(name.lstrip(" ")) - 1) // 2, name.strip()))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--top", type=int, default=12, help="how many of snapshot's costliest imports to list")
    parser.add_argument("--dir", type=Path, default=default_dir(),
                        help="where to make the temp dir (default /dev/shm if present, else the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (Redis is stopped anyway)")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    if not AGENTKIT.is_file():
        raise SystemExit(f"no agentkit console script at {AGENTKIT}; run with the python of the venv "
                         "agentkit is installed in")

    commands = {
        "import typer": [sys.executable, "-c", "import typer"],
        "snapshot --json": [AGENTKIT, "snapshot", "--json"],
        "scale status --json": [AGENTKIT, "scale", "status", "--json"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    tmp = Path(tempfile.mkdtemp(prefix="agentkit-bench-cold-", dir=args.dir))
    repo = tmp / "repo"
    redis_started = False
    try:
        repo.mkdir()
        run(["git", "init", "-q", "-b", "main"], repo)
        for i in range(20):
            (repo / f"file{i:02d}.txt").write_text(f"line {i}\n")
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-q", "-m", "small fixture"], repo)
        run([AGENTKIT, "redis", "start"], repo)
        redis_started = True
        for slug in ("agent-1", "agent-2", "agent-3"):
            run([AGENTKIT, "worktree", "new", slug], repo)

        names = list(commands)
        for i in range(args.warmup + args.rounds):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                secs = timed(commands[name], repo)
                if i >= args.warmup:
                    times[name].append(secs)
        imports = import_profile(repo)
    finally:
        if redis_started:
            subprocess.run([str(AGENTKIT), "redis", "stop"], cwd=repo, capture_output=True, env=ENV)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["import typer"]
    print(f"cold start, {args.rounds} rounds (+{args.warmup} warm-up), order rotated; "
          f"repo with 3 worktrees, managed Redis running")
    print(f"{'':<22}{'median':>10}{'p90':>10}{'vs typer':>10}")
    for name in names:
        print(f"{name:<22}{med[name] * 1000:8.1f}ms{p90(times[name]) * 1000:8.1f}ms{med[name] / base:9.2f}x")
    print()
    for name in ("snapshot --json", "scale status --json"):
        ratio = med[name] / base
        print(f"{name}: {ratio:.2f}x import typer (+{(med[name] - base) * 1000:.1f} ms); "
              f"goal <= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}")

    by_name = {name: cumulative for cumulative, _depth, name in imports}
    print()
    print("modules `agentkit snapshot --json` imports (cumulative import time under -X importtime):")
    for mod in WATCHED:
        print(f"  {mod:<13}" + (f"imported  {by_name[mod] / 1000:6.1f} ms" if mod in by_name else "not imported"))
    print(f"its {args.top} costliest imports (cumulative, nested ones included):")
    for cumulative, depth, name in sorted(imports, reverse=True)[:args.top]:
        print(f"  {cumulative / 1000:6.1f} ms  {'  ' * depth}{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
