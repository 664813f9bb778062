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
not a cold disk. It also runs `agentkit snapshot --json` once under `python -X importtime` and reports which of
redis, rich, sqlite_utils, psutil and yaml that command imported (a JSON snapshot needs none of them in
principle), plus its costliest imports. Which modules were imported is read from sys.modules at exit (exact);
-X importtime gives the times but has no line for a module loaded with importlib.import_module (only for the
modules that one imports in turn). AGENTKIT_* variables are dropped from the environment so the defaults are
measured. The first line shows the load average: on a busy machine, compare ratios from the same run only.

Goal: median(command) / median(import typer) <= 1.5x, for each of the two commands.

    python bench/cold_start.py [--rounds 15] [--warmup 1] [--top 12] [--dir DIR] [--keep]
"""

import argparse
import statistics
import sys
from pathlib import Path

from _common import (
    AGENTKIT,
    add_dir_arg,
    add_keep_arg,
    add_rounds_args,
    check_rounds,
    git_init,
    machine,
    managed_redis,
    pct,
    require_agentkit,
    run,
    temp_dir,
    timed,
)

GOAL = 1.5
WATCHED = ["redis", "rich", "sqlite_utils", "psutil", "yaml"]
# `python -m agentkit.cli snapshot --json`, then the names in sys.modules on stderr, one per "module: " line.
PROFILED = """\
import runpy, sys
sys.argv = ["agentkit", "snapshot", "--json"]
code = 0
try:
    runpy.run_module("agentkit.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
sys.stderr.write("".join(f"module: {name}\\n" for name in list(sys.modules)))
sys.exit(code)
"""


def import_profile(repo: Path) -> tuple[list[tuple[int, int, str]], set[str]]:
    """(cumulative us, nesting depth, module) for every import `agentkit snapshot --json` makes, as -X importtime
    reports them, and the names of all modules it had imported when it ended."""
    done = run([sys.executable, "-X", "importtime", "-c", PROFILED], repo)
    rows, loaded = [], set()
    for line in done.stderr.decode(errors="replace").splitlines():
        if line.startswith("module: "):
            loaded.add(line.removeprefix("module: "))
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        rows.append((int(cumulative), (len(name) - len(name.lstrip(" ")) - 1) // 2, name.strip()))
    return rows, loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rounds_args(parser, rounds=15)
    parser.add_argument("--top", type=int, default=12, help="how many of snapshot's costliest imports to list")
    add_dir_arg(parser)
    add_keep_arg(parser, "Redis is stopped anyway")
    args = parser.parse_args()
    check_rounds(parser, args)
    require_agentkit()

    commands = {
        "import typer": [sys.executable, "-c", "import typer"],
        "snapshot --json": [AGENTKIT, "snapshot", "--json"],
        "scale status --json": [AGENTKIT, "scale", "status", "--json"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with temp_dir("agentkit-bench-cold-", args.keep, args.dir) as tmp:
        repo = tmp / "repo"
        git_init(repo, branch="main")
        for i in range(20):
            (repo / f"file{i:02d}.txt").write_text(f"line {i}\n")
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-q", "-m", "small fixture"], repo)
        with managed_redis(repo):
            for slug in ("agent-1", "agent-2", "agent-3"):
                run([AGENTKIT, "worktree", "new", slug], repo)

            names = list(commands)
            for i in range(args.warmup + args.rounds):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    secs = timed(commands[name], repo)
                    if i >= args.warmup:
                        times[name].append(secs)
            imports, loaded = import_profile(repo)

    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["import typer"]
    print(f"cold start, {args.rounds} rounds (+{args.warmup} warm-up), order rotated; "
          f"repo with 3 worktrees, managed Redis running; {machine()}")
    print(f"{'':<22}{'median':>10}{'p90':>10}{'vs typer':>10}")
    for name in names:
        print(f"{name:<22}{med[name] * 1000:8.1f}ms{pct(times[name], 0.9) * 1000:8.1f}ms{med[name] / base:9.2f}x")
    print()
    for name in ("snapshot --json", "scale status --json"):
        ratio = med[name] / base
        print(f"{name}: {ratio:.2f}x import typer (+{(med[name] - base) * 1000:.1f} ms); "
              f"goal <= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}")

    by_name = {name: cumulative for cumulative, _depth, name in imports}
    print()
    print("modules `agentkit snapshot --json` imports (cumulative import time under -X importtime):")
    for mod in WATCHED:
        if mod not in loaded:
            print(f"  {mod:<13}not imported")
        else:
            print(f"  {mod:<13}imported  " + (f"{by_name[mod] / 1000:6.1f} ms" if mod in by_name else "(no time)"))
    print(f"its {args.top} costliest imports (cumulative, nested ones included):")
    for cumulative, depth, name in sorted(imports, reverse=True)[:args.top]:
        print(f"  {cumulative / 1000:6.1f} ms  {'  ' * depth}{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
