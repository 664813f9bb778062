"""Dashboard: event -> visible in the browser latency, and the page's load time against fetching its snapshot.

One throwaway git repo in a temp dir (`git init -b main`, one empty commit), `agentkit redis start`, then
`agentkit dashboard --port 0` serving it and headless Chromium (/usr/bin/chromium, driven by Playwright) showing its
page. A MutationObserver installed before the page's own scripts stamps, with Date.now(), each `#feed
li[data-event-id]` the first time it appears and each `#tasks li[data-task-id]` the first time it shows a (task,
status); latency = that stamp - the event's own `ts` (both the machine's wall clock, so no polling of ours is in
it). AGENTKIT_* variables are dropped first, so the defaults are measured. Setup is not timed.

1. A run's task moves -> #feed. --run-tasks (default 20) tasks, `agentkit run -c 2 --yolo --into none
   --agent-cmd 'sleep 0.2'` with the page open; every feature_update event of the run -> its feed line.
2. CLI changes -> the task list. Then --tasks (default 200) more tasks are imported (every third depends on the
   one before it) and --jobs (default 30) `agentkit spawn -- sleep 600` jobs run at once (jobs.max_concurrency
   raised to fit them); --events (default 30) CLI calls one after the other, alternating `agentkit task add
   bench-K` and `agentkit task pass` of the task just added: task.added / task.passed -> the task's row showing
   pending / passing. The next call waits for the row (or 5 s), then 0.3 s; the feed's figure for these events is
   printed too, when the page puts their kinds in its feed.
   Goal for 1 and 2: p50 < 300 ms, every event shown (printed met / not met; the exit status stays 0).
3. Load time with those tasks and jobs, medians over --rounds (default 5, after --warmup 1), a fresh tab each:
       page        navigation start -> document.body.dataset.ready === "1" (the first snapshot rendered), from
                   the page's own clock (performance.now() when the observer sees data-ready become "1")
       /api/snapshot  GET of the JSON the page renders, by httpx from this process (connection not reused)
       snapshot CLI   `agentkit snapshot --json` as a process (what a script polling the CLI pays)
   and the ratios page / api and page / CLI, all measured in the same run.

    python bench/dashboard.py [--run-tasks 20] [--tasks 200] [--jobs 30] [--events 30] [--rounds 5] [--keep]
"""

import argparse
import json
import os
import queue
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path

from _common import (
    AGENTKIT_CLI,
    ENV,
    add_dir_arg,
    add_keep_arg,
    add_rounds_args,
    check_rounds,
    drop_agentkit_env,
    machine,
    managed_redis,
    pct,
    run,
    temp_dir,
)

CHROMIUM = Path("/usr/bin/chromium")
LATENCY_GOAL_MS = 300.0

drop_agentkit_env()

OBSERVER = """
window.__seenAt = {};
const stamp = (key) => { if (!(key in window.__seenAt)) window.__seenAt[key] = Date.now(); };
new MutationObserver(() => {
  for (const li of document.querySelectorAll('#feed li[data-event-id]')) stamp('event:' + li.dataset.eventId);
  for (const li of document.querySelectorAll('#tasks li[data-task-id]'))
    stamp('task:' + li.dataset.taskId + ':' + li.dataset.status);
  if (window.__readyAt === undefined && document.body && document.body.dataset.ready === '1')
    window.__readyAt = performance.now();
}).observe(document, {childList: true, subtree: true, attributes: true,
                      attributeFilter: ['data-ready', 'data-status', 'data-event-id']});
"""


def ak(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run([*AGENTKIT_CLI, *args], repo)


def ak_json(repo: Path, *args: str):
    return json.loads(ak(repo, *args, "--json").stdout)


def import_tasks(repo: Path, first: int, count: int, name: str) -> None:
    """Tasks first..first+count-1 named `name N`; every third depends on the one before it."""
    specs = [{"id": i, "name": f"{name} {i}", "depends_on": [i - 1] if (i - first + 1) % 3 == 0 else []}
             for i in range(first, first + count)]
    (repo.parent / "tasks.json").write_text(json.dumps(specs))
    ak(repo, "task", "import", str(repo.parent / "tasks.json"))


def spawn_jobs(repo: Path, jobs: int) -> None:
    for i in range(jobs):
        ak(repo, "spawn", "--name", f"agent-{i}", "--", "sleep", "600")
    deadline = time.monotonic() + 60
    while len(ak_json(repo, "jobs", "list", "--state", "running")["jobs"]) < jobs:
        if time.monotonic() > deadline:
            raise SystemExit(f"fewer than {jobs} jobs running after 60 s")
        time.sleep(0.2)


def run_feed(repo: Path, tab, tasks: int) -> tuple[list[float], int]:
    """`agentkit run` over tasks 1..tasks (already imported) with 0.2 s agents, the page open: ms from each
    feature_update event to its line in #feed, and how many such events never showed."""
    run([*AGENTKIT_CLI, "run", "-c", "2", "--yolo", "--into", "none", "--agent-cmd", "sleep 0.2"], repo)
    time.sleep(1.0)
    seen = tab.evaluate("window.__seenAt")
    moves = ak_json(repo, "events", "--kind", "feature_update", "--limit", "100000")["events"]
    got = [seen[f"event:{e['id']}"] - e["ts"] * 1000 for e in moves if f"event:{e['id']}" in seen]
    return got, len(moves) - len(got)


def start_dashboard(repo: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*AGENTKIT_CLI, "dashboard", "--port", "0"], cwd=repo, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                raise SystemExit(f"agentkit dashboard exited {proc.returncode}: {proc.stderr.read()}") from None
            continue
        if m := re.match(r"dashboard: (http://\S+)", line.strip()):
            return proc, m.group(1)
    proc.kill()
    raise SystemExit("agentkit dashboard printed no `dashboard: http://…` line within 30 s")


def latency(repo: Path, tab, events: int) -> tuple[list[float], list[float], int]:
    """Per CLI call: ms from its event to the task list showing the change, and to #feed showing the event (when
    the page puts that kind in the feed); and how many calls the task list never showed within 5 s."""
    last = ak_json(repo, "events", "--limit", "100000")["events"][-1]["id"]
    shown_ms, feed_ms, missed, added = [], [], 0, None
    for k in range(events):
        if added is None:
            added = ak_json(repo, "task", "add", f"bench-{k}")["id"]
            key, kind = f"task:{added}:pending", "task.added"
        else:
            ak(repo, "task", "pass", str(added))
            key, kind, added = f"task:{added}:passing", "task.passed", None
        new = ak_json(repo, "events", "--since", str(last))["events"]
        last = new[-1]["id"] if new else last
        event = next(e for e in new if e["kind"] == kind)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            seen = tab.evaluate("window.__seenAt")
            if key in seen:
                shown_ms.append(seen[key] - event["ts"] * 1000)
                break
            time.sleep(0.01)
        else:
            missed += 1
        time.sleep(0.3)  # let the feed catch up too, and keep the calls apart
        seen = tab.evaluate("window.__seenAt")
        if f"event:{event['id']}" in seen:
            feed_ms.append(seen[f"event:{event['id']}"] - event["ts"] * 1000)
    return shown_ms, feed_ms, missed


def load_page(context, url: str) -> float:
    tab = context.new_page()
    try:
        tab.goto(url)
        tab.wait_for_function("window.__readyAt !== undefined", timeout=30_000)
        return tab.evaluate("window.__readyAt") / 1000
    finally:
        tab.close()


def spread(ms: list[float]) -> str:
    return f"p50 {pct(ms, 0.5):.0f} ms, p90 {pct(ms, 0.9):.0f} ms, max {max(ms, default=float('nan')):.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--run-tasks", type=int, default=20)
    add_rounds_args(parser, 5)
    add_dir_arg(parser)
    add_keep_arg(parser)
    args = parser.parse_args()
    check_rounds(parser, args)
    try:
        import httpx
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise SystemExit(f"needs playwright and httpx in this venv: {exc}") from None
    if not CHROMIUM.is_file():
        raise SystemExit(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    ENV["AGENTKIT_JOBS_MAX_CONCURRENCY"] = str(max(args.jobs + 10, 40))
    print(f"dashboard: {args.run_tasks} + {args.tasks} tasks, {args.jobs} running jobs; {machine()}")
    with temp_dir("ak-bench-dash-", args.keep, args.dir) as tmp:
        repo = tmp / "app"
        repo.mkdir()
        run(["git", "init", "-q", "-b", "main"], repo)
        run(["git", "commit", "-q", "--allow-empty", "-m", "init"], repo)
        with managed_redis(repo, AGENTKIT_CLI):
            import_tasks(repo, 1, args.run_tasks, "run")
            dash, url = start_dashboard(repo)
            try:
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=["--no-sandbox"] if os.geteuid() == 0 else [])
                    context = browser.new_context()
                    context.add_init_script(OBSERVER)
                    tab = context.new_page()
                    tab.goto(url)
                    tab.wait_for_function("window.__readyAt !== undefined", timeout=30_000)
                    moves, moves_missed = run_feed(repo, tab, args.run_tasks)
                    import_tasks(repo, args.run_tasks + 1, args.tasks, "task")
                    spawn_jobs(repo, args.jobs)
                    lat, feed, missed = latency(repo, tab, args.events)
                    tab.close()
                    loads, apis, clis = [], [], []
                    api = re.sub(r"\?.*", "", url) + "api/snapshot"
                    for r in range(args.warmup + args.rounds):
                        page_s = load_page(context, url)
                        t0 = time.perf_counter()
                        got = httpx.get(api, timeout=30)
                        api_s = time.perf_counter() - t0
                        got.raise_for_status()
                        t0 = time.perf_counter()
                        ak(repo, "snapshot", "--json")
                        cli_s = time.perf_counter() - t0
                        if r >= args.warmup:
                            loads.append(page_s)
                            apis.append(api_s)
                            clis.append(cli_s)
                    browser.close()
            finally:
                dash.terminate()
                dash.wait(15)
                left = [str(j["job_id"]) for j in ak_json(repo, "jobs", "list", "--state", "running")["jobs"]]
                if left:
                    subprocess.run([*AGENTKIT_CLI, "jobs", "kill", *left], cwd=repo, env=ENV, capture_output=True)
    print(f"1. a run's task moves -> #feed: {len(moves)} feature_update events of `agentkit run` over "
          f"{args.run_tasks} tasks{f', {moves_missed} never shown' if moves_missed else ''}")
    print(f"   {spread(moves)}")
    print(f"2. event -> visible in the task list: {len(lat)} of {args.events} CLI calls (task add / task pass)"
          f"{f', {missed} never shown within 5 s' if missed else ''}")
    print(f"   {spread(lat)}")
    print(f"   in #feed too: {len(feed)} of {args.events}" + (f", p50 {pct(feed, 0.5):.0f} ms" if feed else
                                                              " (the page's feed leaves these kinds out)"))
    for what, values, lost in (("feed", moves, moves_missed), ("task list", lat, missed)):
        met = bool(values) and pct(values, 0.5) < LATENCY_GOAL_MS and not lost
        print(f"   goal {what} p50 < {LATENCY_GOAL_MS:.0f} ms, every event shown: {'met' if met else 'not met'}")
    page, api_m, cli_m = (statistics.median(v) for v in (loads, apis, clis))
    print(f"3. load ({args.run_tasks + args.tasks} tasks, {args.jobs} running jobs), medians of {args.rounds} "
          f"(after {args.warmup} warm-up):")
    print(f"   page (navigation start -> body ready)  {page * 1000:7.1f} ms")
    print(f"   GET /api/snapshot (httpx)              {api_m * 1000:7.1f} ms   page / api  {page / api_m:5.1f}x")
    print(f"   agentkit snapshot --json (process)     {cli_m * 1000:7.1f} ms   page / CLI  {page / cli_m:5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
