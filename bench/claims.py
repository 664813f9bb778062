"""Claim throughput and latency: N processes draining 2,000 ready tasks from one state DB, vs a bare sqlite3 loop.

What it measures: for each N in 1, 4, 16 a fresh throwaway git repo (`git init`, one empty commit) gets 2,000
independent tasks through `agentkit.tasks.import_file` (one JSON file, not timed), so every task is ready. N
worker processes (multiprocessing, 'spawn' start method by default) each build `agentkit.repo.Repo(path)`, wait
on a barrier, then loop:

    claims.claim(repo, agent=f"w{i}")                      <- timed (time.perf_counter), per call
    claims.release(repo, claim_id, outcome="pass")          <- not timed (a claim by the same agent is
                                                               idempotent, so the claim must end first)

until claim raises AgentkitError with code 4 (NOTHING_READY). Every claimed task id is recorded; any other
exception counts as an error and the claim is retried (a retry) - the API itself has no retry loop, so both
must stay 0. A claim that came back with existing=True would mean the release did not land; it is counted too.

Reported per N:
    claims/s          tasks claimed / (last worker done - barrier released), the claim+release loop of all N
    mean ms           mean claim() latency; at N=1, 1000 / mean is the claim-only rate used for the ratio
    p50 / p99 / p99.9 / max   claim() latency in ms, nearest rank over every claim of every worker
    duplicates        task ids claimed more than once (must be 0)
    retries, errors   claim() calls repeated after an exception, exceptions other than the final exit 4 (0, 0)
and afterwards the DB is checked: every task passing, one claim row per task. A fairness line shows the
claims each worker got and how long the longest final exit-4 call took (a worker that waited on the write lock
for the whole run shows up there, not in the claim latencies).

Baseline, in the same run: the same number of rows claimed by a bare single-process sqlite3 loop on a WAL
database in a temp dir (same default synchronous setting as agentkit, which does not change it):

    BEGIN IMMEDIATE; SELECT id FROM t WHERE status='pending' ORDER BY priority, id LIMIT 1;
    UPDATE t SET status='claimed' WHERE id=? AND status='pending'; COMMIT

(median of --bare-rounds runs, each on a fresh database). Printed ratio: bare claims/s / agentkit claims/s at
N=1, both for the claim-only rate (like for like: one transaction per claim on each side) and the wall rate
(agentkit's loop also pays for the release transaction).

Goal: correctness under contention - 0 duplicates, 0 retries, 0 errors, every task claimed exactly once, at
every N (printed as met / NOT met; the exit status is 1 if not). Throughput, latency and the bare ratio are
reported, not graded: they show what agentkit's claim costs over the minimal SQLite claim and how it scales.

    python bench/claims.py [--tasks 2000] [--procs 1,4,16] [--bare-rounds 5] [--start-method spawn] [--keep]
"""

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from _common import add_keep_arg, drop_agentkit_env, empty_repo, pct, temp_dir

MAX_CONSECUTIVE_ERRORS = 20

# The defaults are measured: no AGENTKIT_* override (e.g. AGENTKIT_HOME) reaches this process or the workers.
drop_agentkit_env()


def make_repo(path: Path, n_tasks: int) -> float:
    """A git repo with one empty commit and n_tasks independent pending tasks; returns the import time."""
    from agentkit import tasks
    from agentkit.repo import Repo

    empty_repo(path)
    tasks_file = path.parent / f"{path.name}-tasks.json"
    tasks_file.write_text(json.dumps({"tasks": [{"name": f"bench task {i}", "priority": 1000 + i % 7}
                                                for i in range(n_tasks)]}))
    repo = Repo(path)
    t0 = time.perf_counter()
    out = tasks.import_file(repo, tasks_file)
    took = time.perf_counter() - t0
    ready = len(tasks.ready(repo))
    repo.close()
    if out["imported"] != n_tasks or ready != n_tasks:
        raise SystemExit(f"setup: imported {out['imported']}, ready {ready}, expected {n_tasks}")
    return took


def worker(index: int, repo_path: str, barrier, results) -> None:
    """Claim, release as passing, repeat until nothing is ready; send back latencies, ids and error counts."""
    from agentkit import claims
    from agentkit.errors import AgentkitError, ExitCode
    from agentkit.repo import Repo

    repo = Repo(Path(repo_path))
    _ = repo.store  # open (and check) the DB before the clock starts
    agent = f"w{index}"
    latencies: list[float] = []
    ids: list[int] = []
    errors: Counter = Counter()
    retries = existing = release_errors = 0
    consecutive = 0
    final_wait = 0.0
    barrier.wait()
    start = time.monotonic()
    while True:
        t0 = time.perf_counter()
        try:
            c = claims.claim(repo, agent=agent)
        except AgentkitError as exc:
            if exc.code == ExitCode.NOTHING_READY:
                final_wait = time.perf_counter() - t0  # not a claim: kept apart to show lock waits
                break
            errors[f"AgentkitError({exc.code.name}): {exc.message.splitlines()[0][:80]}"] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding here
            errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
        else:
            latencies.append(time.perf_counter() - t0)
            consecutive = 0
            ids.append(c["task_id"])
            existing += bool(c.get("existing"))
            try:
                claims.release(repo, c["claim_id"], outcome="pass")
            except Exception as exc:  # noqa: BLE001
                release_errors += 1
                errors[f"release {type(exc).__name__}: {str(exc)[:80]}"] += 1
            continue
        consecutive += 1
        if consecutive > MAX_CONSECUTIVE_ERRORS:
            errors["gave up after repeated errors"] += 1
            break
        retries += 1
    end = time.monotonic()
    repo.close()
    results.put({"index": index, "start": start, "end": end, "latencies": latencies, "ids": ids,
                 "errors": dict(errors), "retries": retries, "existing": existing,
                 "release_errors": release_errors, "final_wait": final_wait})


def run_agentkit(tmp: Path, n_procs: int, n_tasks: int, method: str) -> dict:
    repo_path = tmp / f"repo-n{n_procs}"
    import_s = make_repo(repo_path, n_tasks)
    ctx = mp.get_context(method)
    barrier = ctx.Barrier(n_procs)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(i, str(repo_path), barrier, results)) for i in range(n_procs)]
    for p in procs:
        p.start()
    got = [results.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a worker exited with {p.exitcode}")

    ids = [t for r in got for t in r["ids"]]
    lat = [x for r in got for x in r["latencies"]]
    errors: Counter = Counter()
    for r in got:
        errors.update(r["errors"])
    wall = max(r["end"] for r in got) - min(r["start"] for r in got)
    dup = sum(n - 1 for n in Counter(ids).values() if n > 1)

    # the DB agrees: every task passing, one claim row per task, no claim left active
    conn = sqlite3.connect(repo_path / ".agents" / "agentkit.db")
    passing = conn.execute("SELECT count(*) FROM tasks WHERE status = 'passing'").fetchone()[0]
    claim_rows, claimed_tasks = conn.execute("SELECT count(*), count(DISTINCT task_id) FROM claims").fetchone()
    active = conn.execute("SELECT count(*) FROM claims WHERE state = 'active'").fetchone()[0]
    conn.close()
    return {"n": n_procs, "claims": len(ids), "wall": wall, "claim_time": sum(lat), "lat": lat, "dup": dup,
            "retries": sum(r["retries"] for r in got), "errors": errors, "existing": sum(r["existing"] for r in got),
            "per_worker": sorted(len(r["ids"]) for r in got), "import_s": import_s,
            "final_wait": max(r["final_wait"] for r in got),
            "db_ok": passing == n_tasks and claim_rows == n_tasks and claimed_tasks == n_tasks and active == 0,
            "db": f"passing={passing} claim_rows={claim_rows} distinct_tasks={claimed_tasks} active={active}"}


def run_bare(tmp: Path, n_tasks: int, round_no: int) -> dict:
    db = tmp / f"bare-{round_no}" / "bare.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, priority INTEGER NOT NULL, status TEXT NOT NULL)")
    conn.execute("CREATE INDEX t_status ON t(status)")  # as agentkit's tasks_status index
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (id, priority, status) VALUES (?, ?, 'pending')",
                     [(i + 1, 1000 + i % 7) for i in range(n_tasks)])
    conn.execute("COMMIT")
    ids, lat = [], []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT id FROM t WHERE status = 'pending' ORDER BY priority, id LIMIT 1").fetchone()
        if row is None:
            conn.execute("COMMIT")
            break
        won = conn.execute("UPDATE t SET status = 'claimed' WHERE id = ? AND status = 'pending'", (row[0],)).rowcount
        conn.execute("COMMIT")
        if won == 1:
            ids.append(row[0])
            lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    conn.close()
    if len(ids) != n_tasks or len(set(ids)) != n_tasks:
        raise SystemExit(f"bare loop claimed {len(ids)} ({len(set(ids))} distinct), expected {n_tasks}")
    return {"wall": wall, "lat": lat, "rate": n_tasks / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="ready tasks to drain per N (default 2000)")
    parser.add_argument("--procs", default="1,4,16", help="comma-separated process counts (default 1,4,16)")
    parser.add_argument("--bare-rounds", type=int, default=5, help="runs of the bare sqlite3 loop (default 5)")
    parser.add_argument("--start-method", default="spawn", choices=["spawn", "fork", "forkserver"])
    add_keep_arg(parser)
    args = parser.parse_args()
    procs = [int(x) for x in args.procs.split(",") if x.strip()]
    if args.tasks < 1 or not procs or min(procs) < 1:
        parser.error("--tasks and every --procs value must be at least 1")

    rows, bare = [], []
    with temp_dir("agentkit-bench-claims-", args.keep) as tmp:
        for n in procs:
            t0 = time.perf_counter()
            r = run_agentkit(tmp, n, args.tasks, args.start_method)
            rows.append(r)
            print(f"  N={n:<3} {r['claims']} claims in {r['wall']:.2f} s wall "
                  f"(setup: import {r['import_s'] * 1000:.0f} ms; whole step {time.perf_counter() - t0:.1f} s)",
                  flush=True)
        for i in range(args.bare_rounds):
            bare.append(run_bare(tmp, args.tasks, i))
            print(f"  bare round {i + 1}: {args.tasks} claims in {bare[-1]['wall'] * 1000:.0f} ms", flush=True)

    print()
    print(f"claims: {args.tasks} independent ready tasks drained per N, claim + release(pass) loop, "
          f"'{args.start_method}' workers, {os.cpu_count()} CPUs")
    print(f"{'N':>3} {'claims':>6} {'claims/s':>8} {'mean ms':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>9} "
          f"{'max ms':>8} {'dup':>3} {'retries':>7} {'errors':>6} {'existing':>8} {'DB check':>8}")
    for r in rows:
        lat = r["lat"]
        print(f"{r['n']:>3} {r['claims']:>6} {r['claims'] / r['wall']:>8.1f} {r['claim_time'] / len(lat) * 1000:>8.2f} "
              f"{pct(lat, 0.5) * 1000:>7.2f} {pct(lat, 0.99) * 1000:>7.2f} {pct(lat, 0.999) * 1000:>9.1f} "
              f"{max(lat) * 1000:>8.1f} {r['dup']:>3} {r['retries']:>7} {sum(r['errors'].values()):>6} "
              f"{r['existing']:>8} {'ok' if r['db_ok'] else 'MISMATCH':>8}")
    print("fairness (claims per worker, sorted; workers with 0 claims; longest final exit-4 call, which waits for the "
          "lock like a claim):")
    for r in rows:
        pw = r["per_worker"]
        shown = " ".join(map(str, pw)) if len(pw) <= 16 else f"{pw[0]} .. {pw[-1]}"
        print(f"  N={r['n']:<3} [{shown}]  zero: {sum(1 for x in pw if x == 0)}  "
              f"final exit-4 call: {r['final_wait'] * 1000:.0f} ms")
    for r in rows:
        print(f"  N={r['n']:<3} DB: {r['db']}")
        for msg, count in r["errors"].most_common(5):
            print(f"      error x{count}: {msg}")

    bare_rate = statistics.median(b["rate"] for b in bare) if bare else float("nan")
    bare_lat = [x for b in bare for x in b["lat"]]
    if bare:
        print(f"bare sqlite3 loop (1 process, WAL, median of {len(bare)}): {bare_rate:,.0f} claims/s, "
              f"p50 {pct(bare_lat, 0.5) * 1000:.3f} ms, p99 {pct(bare_lat, 0.99) * 1000:.3f} ms")
    one = next((r for r in rows if r["n"] == 1), None)
    if one and bare:
        print(f"ratio bare / agentkit at N=1: {bare_rate / (one['claims'] / one['claim_time']):.1f}x (claim-only), "
              f"{bare_rate / (one['claims'] / one['wall']):.1f}x (wall, agentkit loop includes the release)")
    if one:
        for r in rows:
            if r is not one:
                speedup = (r["claims"] / r["wall"]) / (one["claims"] / one["wall"])
                print(f"scaling N={r['n']} / N=1 (wall claims/s): {speedup:.2f}x; "
                      f"p50 latency {pct(r['lat'], 0.5) / pct(one['lat'], 0.5):.1f}x")
    clean = all(r["dup"] == 0 and r["retries"] == 0 and not r["errors"] and r["existing"] == 0 and r["db_ok"]
                and r["claims"] == args.tasks for r in rows)
    print(f"correctness (0 duplicates, 0 retries, 0 errors, every task claimed once): {'met' if clean else 'NOT met'}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
