"""Time of the ready set on a 10,000-task graph: `agentkit.tasks.ready(repo)` in-process and `agentkit task ready
--json` as a subprocess.

What it measures: a throwaway git repo (`git init`, one empty commit) gets a state DB holding 10,000 tasks and
30,000 dependency edges - a random DAG, fixed seed: each edge goes from a higher id to a lower id (task depends
on an earlier task), so there is no cycle; random priorities. The rows are inserted straight into the `tasks`
and `task_deps` tables inside one `repo.store.tx()` (not timed; the import path would check the graph for
cycles, which is not what is measured here). The lowest 30% of ids are marked passing - a set closed under
dependencies, as if the work had progressed from the foundations up - so the ready set (pending tasks whose
dependencies all pass) is a non-trivial frontier; its size is printed.

Then, with time.perf_counter:
    tasks.ready(repo)                    in-process on one open Repo, --rounds rounds (default 7) after one
                                         untimed warm-up (the first call also opens the DB and loads plugins)
    agentkit task ready --json           the console script next to sys.executable, subprocess.run in the repo,
                                         --cli-rounds rounds (default 3); includes interpreter start-up, imports,
                                         opening the DB and printing the JSON
Readiness and scores are kept in the tasks table; rows inserted straight into it get them on first use (the
untimed warm-up rebuilds them). A breakdown follows: one read with scores kept, one after every score was
cleared (all ready tasks rescored by the hook), one after the derived columns were dropped (full rebuild).
When the goal is not met (or with --profile) one call runs under cProfile and the top functions are printed.

Goal: median in-process tasks.ready(repo) < 0.3 s on this graph.

    python bench/task_ready.py [--tasks 10000] [--edges 30000] [--passing 0.3] [--rounds 7] [--cli-rounds 3]
                               [--seed 1234] [--profile] [--keep]
"""

import argparse
import cProfile
import io
import json
import pstats
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import AGENTKIT, add_keep_arg, child_env, drop_agentkit_env, empty_repo, require_agentkit, temp_dir

GOAL_S = 0.3

# The defaults are measured: no AGENTKIT_* override (e.g. AGENTKIT_HOME) reaches this process or the CLI.
drop_agentkit_env()


def random_dag(n_tasks: int, n_edges: int, rng: random.Random) -> set[tuple[int, int]]:
    """n_edges distinct (task_id, dep_id) pairs with task_id > dep_id: a DAG on ids 1..n_tasks."""
    if n_edges > n_tasks * (n_tasks - 1) // 2:
        raise SystemExit(f"{n_edges} edges do not fit in a DAG of {n_tasks} tasks")
    edges: set[tuple[int, int]] = set()
    while len(edges) < n_edges:
        a, b = rng.randint(1, n_tasks), rng.randint(1, n_tasks)
        if a != b:
            edges.add((max(a, b), min(a, b)))
    return edges


def build(path: Path, n_tasks: int, n_edges: int, passing_frac: float, seed: int) -> dict:
    from agentkit.repo import Repo

    empty_repo(path)
    rng = random.Random(seed)
    edges = random_dag(n_tasks, n_edges, rng)
    n_passing = round(n_tasks * passing_frac)
    now = time.time()
    rows = []
    for i in range(1, n_tasks + 1):
        passing = i <= n_passing
        rows.append((i, f"bench task {i}", f"description of task {i}", f"cat{i % 10}", "[]", rng.randint(0, 2000),
                     "passing" if passing else "pending", 0, 0, "{}", now if passing else None, now, now))
    repo = Repo(path)
    with repo.store.tx() as conn:
        conn.executemany("INSERT INTO tasks (id, name, description, category, steps, priority, status, attempts, "
                         "skip_count, meta, verified_at, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)", sorted(edges))
    conn = repo.store.conn
    counts = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
    n_deps = conn.execute("SELECT count(*) FROM task_deps").fetchone()[0]
    no_deps = conn.execute("SELECT count(*) FROM tasks t WHERE NOT EXISTS "
                           "(SELECT 1 FROM task_deps d WHERE d.task_id = t.id)").fetchone()[0]
    repo.close()
    return {"counts": counts, "edges": n_deps, "no_deps": no_deps}


def phases(repo) -> list[tuple[str, float]]:
    """What a ready-set read costs in its three situations: scores kept (the normal case), every ready task
    rescored (after the set of scoring plugins changed), and the derived columns rebuilt from scratch (a
    database from before they existed). The last two clear state straight in SQL, as nothing else would."""
    from agentkit import tasks

    conn = repo.store.conn
    out = []
    t = time.perf_counter()
    tasks.ready(repo)
    out.append(("ready, scores kept (one indexed read)", time.perf_counter() - t))
    with repo.store.tx() as c:
        c.execute("UPDATE tasks SET score = NULL")
    t = time.perf_counter()
    tasks.ready(repo)
    out.append(("ready, every ready task rescored (task_scores hook)", time.perf_counter() - t))
    with repo.store.tx() as c:
        c.execute("DELETE FROM task_scoring")
    t = time.perf_counter()
    tasks.ready(repo)
    out.append(("ready, derived columns rebuilt (unmet_deps, dependents, scores)", time.perf_counter() - t))
    conn.execute("SELECT 1")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in the graph (default 10000)")
    parser.add_argument("--edges", type=int, default=30_000, help="dependency edges (default 30000)")
    parser.add_argument("--passing", type=float, default=0.3, help="fraction of tasks passing (default 0.3)")
    parser.add_argument("--rounds", type=int, default=7, help="timed in-process rounds (default 7)")
    parser.add_argument("--cli-rounds", type=int, default=3, help="timed CLI rounds (default 3)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    parser.add_argument("--profile", action="store_true", help="run cProfile even when the goal is met")
    add_keep_arg(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.cli_rounds < 0 or args.tasks < 2 or not 0 <= args.passing <= 1:
        parser.error("need --rounds >= 1, --cli-rounds >= 0, --tasks >= 2, 0 <= --passing <= 1")
    if args.cli_rounds:
        require_agentkit("run with the venv's python or --cli-rounds 0")

    from agentkit import tasks
    from agentkit.repo import Repo

    with temp_dir("agentkit-bench-ready-", args.keep) as tmp:
        path = tmp / "repo"
        t0 = time.perf_counter()
        info = build(path, args.tasks, args.edges, args.passing, args.seed)
        print(f"graph: {args.tasks} tasks, {info['edges']} edges (seed {args.seed}), statuses {info['counts']}, "
              f"{info['no_deps']} tasks without deps; built in {time.perf_counter() - t0:.1f} s", flush=True)

        repo = Repo(path)
        t0 = time.perf_counter()
        warm = tasks.ready(repo)
        warm_s = time.perf_counter() - t0
        n_ready = len(warm)
        print(f"ready set: {n_ready} tasks (warm-up call, opens the DB and loads plugins: {warm_s * 1000:.0f} ms)",
              flush=True)
        inproc = []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            got = tasks.ready(repo)
            inproc.append(time.perf_counter() - t0)
            if len(got) != n_ready:
                raise SystemExit(f"round {i + 1}: ready set has {len(got)} tasks, expected {n_ready}")
            print(f"  in-process round {i + 1}: {inproc[-1] * 1000:7.1f} ms", flush=True)

        cli, out_bytes = [], 0
        for i in range(args.cli_rounds):
            t0 = time.perf_counter()
            done = subprocess.run([str(AGENTKIT), "task", "ready", "--json"], cwd=path, capture_output=True,
                                  env=child_env())
            cli.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise SystemExit(f"agentkit task ready --json failed ({done.returncode}):\n"
                                 f"{done.stderr.decode(errors='replace')}")
            data = json.loads(done.stdout)
            if len(data["tasks"]) != n_ready:
                raise SystemExit(f"CLI round {i + 1}: {len(data['tasks'])} tasks, expected {n_ready}")
            out_bytes = len(done.stdout)
            print(f"  CLI round {i + 1}: {cli[-1] * 1000:7.1f} ms", flush=True)

        t0 = time.perf_counter()
        done = subprocess.run([str(AGENTKIT), "--help"], cwd=path, capture_output=True, env=child_env()) \
            if args.cli_rounds else None
        help_s = time.perf_counter() - t0 if done is not None and done.returncode == 0 else None

        split = phases(repo)
        med = statistics.median(inproc)
        profile_text = None
        if med >= GOAL_S or args.profile:
            prof = cProfile.Profile()
            prof.enable()
            tasks.ready(repo)
            prof.disable()
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats("tottime").print_stats(12)
            stats.sort_stats("cumulative").print_stats(12)
            profile_text = buf.getvalue()
        repo.close()

    print()
    print(f"task ready on {args.tasks} tasks / {args.edges} edges, {args.passing:.0%} passing, ready set {n_ready}")
    print(f"{'':<34}{'median':>10}{'min':>10}{'max':>10}{'rounds':>8}")
    print(f"{'tasks.ready(repo) in-process':<34}{med * 1000:8.1f}ms{min(inproc) * 1000:8.1f}ms"
          f"{max(inproc) * 1000:8.1f}ms{len(inproc):>8}")
    if cli:
        cmed = statistics.median(cli)
        print(f"{'agentkit task ready --json (CLI)':<34}{cmed * 1000:8.1f}ms{min(cli) * 1000:8.1f}ms"
              f"{max(cli) * 1000:8.1f}ms{len(cli):>8}")
        print(f"CLI / in-process (medians): {cmed / med:.1f}x; CLI output {out_bytes / 1e6:.1f} MB"
              + (f"; `agentkit --help` start-up alone: {help_s * 1000:.0f} ms" if help_s else ""))
    total = sum(s for _, s in split)
    print(f"phases of one in-process call ({total * 1000:.1f} ms in all):")
    for name, secs in split:
        print(f"  {name:<42}{secs * 1000:8.1f} ms {secs / total:6.1%}")
    print(f"goal < {GOAL_S} s (median in-process): {'met' if med < GOAL_S else 'not met'}")
    if profile_text:
        print()
        print("cProfile of one tasks.ready(repo) call (profiler overhead inflates the total):")
        print(profile_text.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
