"""Dashboard: event -> visible in the browser latency, and the page's load time against fetching its snapshot.

One throwaway git repo in a temp dir (`git init -b main`, one empty commit), `agentkit redis start`, --tasks
(default 200) tasks imported (every third depends on the one before it), --jobs (default 30) `agentkit spawn --
sleep 600` jobs running at once (jobs.max_concurrency raised to fit them), then `agentkit dashboard --port 0`
serving it and headless Chromium (/usr/bin/chromium, driven by Playwright) showing its page. None of that is timed.
AGENTKIT_* variables are dropped first, so the defaults are measured.

1. Event -> visible. With the page open, --events (default 30) CLI calls, one after the other, alternating
   `agentkit task add bench-K` and `agentkit task pass` of the task just added. A MutationObserver installed
   before the page's own scripts stamps, with Date.now(), each `#tasks li[data-task-id]` the first time it shows
   a (task, status) and each `#feed li[data-event-id]` the first time it appears; latency = that stamp - the
   event's own `ts` (task.added / task.passed; both the machine's wall clock). The next call waits until the
   task list shows the change (or 5 s), then 0.3 s. p50 and p90 in ms. Goal: p50 < 300 ms. The feed's figure
   is printed as well when the page puts these kinds in its feed.

2. Load time, medians over --rounds (default 5, after --warmup 1) of a fresh tab each:
       page        navigation start -> document.body.dataset.ready === "1" (the first snapshot rendered), from
                   the page's own clock (performance.now() when an observer sees data-ready become "1")
       /api/snapshot  GET of the JSON the page renders, by httpx from this process (connection not reused)
       snapshot CLI   `agentkit snapshot --json` as a process (what a script polling the CLI pays)
   and the ratios page / api and page / CLI.

    python bench/dashboard.py [--tasks 200] [--jobs 30] [--events 30] [--rounds 5] [--warmup 1] [--keep]
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


def setup(repo: Path, tasks: int, jobs: int) -> None:
    specs = [{"id": i, "name": f"task {i}", "depends_on": [i - 1] if i % 3 == 0 else []} for i in range(1, tasks + 1)]
    (repo.parent / "tasks.json").write_text(json.dumps(specs))
    ak(repo, "task", "import", str(repo.parent / "tasks.json"))
    for i in range(jobs):
        ak(repo, "spawn", "--name", f"agent-{i}", "--", "sleep", "600")
    deadline = time.monotonic() + 60
    while len(ak_json(repo, "jobs", "list", "--state", "running")["jobs"]) < jobs:
        if time.monotonic() > deadline:
            raise SystemExit(f"fewer than {jobs} jobs running after 60 s")
        time.sleep(0.2)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--events", type=int, default=30)
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
    print(f"dashboard: {args.tasks} tasks, {args.jobs} running jobs; {machine()}")
    with temp_dir("ak-bench-dash-", args.keep, args.dir) as tmp:
        repo = tmp / "app"
        repo.mkdir()
        run(["git", "init", "-q", "-b", "main"], repo)
        run(["git", "commit", "-q", "--allow-empty", "-m", "init"], repo)
        with managed_redis(repo, AGENTKIT_CLI):
            setup(repo, args.tasks, args.jobs)
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
    p50 = pct(lat, 0.5)
    print(f"1. event -> visible in the task list: {len(lat)} of {args.events} CLI calls (task add / task pass)"
          f"{f', {missed} never shown within 5 s' if missed else ''}")
    print(f"   p50 {p50:.0f} ms, p90 {pct(lat, 0.9):.0f} ms, max {max(lat, default=float('nan')):.0f} ms")
    print(f"   in #feed too: {len(feed)} of {args.events}" + (f", p50 {pct(feed, 0.5):.0f} ms" if feed else
                                                              " (the page's feed leaves these kinds out)"))
    met = bool(lat) and p50 < LATENCY_GOAL_MS and not missed
    print(f"   goal p50 < {LATENCY_GOAL_MS:.0f} ms (every call shown): {'met' if met else 'not met'}")
    page, api_m, cli_m = (statistics.median(v) for v in (loads, apis, clis))
    print(f"2. load, medians of {args.rounds} (after {args.warmup} warm-up):")
    print(f"   page (navigation start -> body ready)  {page * 1000:7.1f} ms")
    print(f"   GET /api/snapshot (httpx)              {api_m * 1000:7.1f} ms   page / api  {page / api_m:5.1f}x")
    print(f"   agentkit snapshot --json (process)     {cli_m * 1000:7.1f} ms   page / CLI  {page / cli_m:5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
