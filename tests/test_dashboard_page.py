"""The dashboard's page in a real headless Chromium, against `agentkit dashboard` serving a repo where `agentkit run`
drives fake agents: what a person looking at the page would see."""

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import GIT_ENV, git

CHROMIUM = Path("/usr/bin/chromium")
FAKE = Path(__file__).parent / "agents" / "fake_agent.py"
# three independent chains of two (-c 3 agents at once, a graph with edges and a critical path), and a task that
# fails until it is dead, which blocks the one after it
DEPS = {1: [], 2: [], 3: [], 4: [1], 5: [2], 6: [3], 7: [], 8: [7]}
NAMES = {**{i: f"t{i}" for i in range(1, 7)}, 7: "broken", 8: "after-broken"}
TASKS = len(DEPS)
CONCURRENCY = 3
AGENT_SLEEP = 8.0  # long enough that cards are on the page while we look at them

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

# Installed before any page script: when each feed line first shows up (ms since the epoch, the clock the events'
# own `ts` uses), so a latency is measured from the page's side, not from our polling.
SEEN_SCRIPT = """
window.__seenAt = {};
new MutationObserver(() => {
  for (const li of document.querySelectorAll('#feed li[data-event-id]')) {
    const id = li.dataset.eventId;
    if (!(id in window.__seenAt)) window.__seenAt[id] = Date.now();
  }
}).observe(document, {childList: true, subtree: true});
"""


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTKIT_", "GIT_"))}
    return {**env, **GIT_ENV, "HOME": str(home)}


class Scene:
    """A repo, its dashboard and (once started) a run, all real processes."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env, self.procs = root, env, []

    def ak(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "agentkit.cli", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert not check or done.returncode == 0, f"agentkit {' '.join(args)}: {done.returncode}\n{done.stderr}"
        return done

    def ak_json(self, *args: str):
        return json.loads(self.ak(*args, "--json").stdout)

    def background(self, *args: str, **kw) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", *args], cwd=self.root, env=self.env,
                                stdin=subprocess.DEVNULL, text=True, **kw)
        self.procs.append(proc)
        return proc

    def dashboard(self, *args: str) -> str:
        """Start `agentkit dashboard ARGS`; return the URL it prints before serving."""
        proc = self.background("dashboard", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                assert proc.poll() is None, f"dashboard exited {proc.returncode}: {proc.stderr.read()}"
                continue
            if m := re.match(r"dashboard: (http://\S+)", line.strip()):
                self.last_dashboard = proc
                return m.group(1)
        raise AssertionError("the dashboard printed no `dashboard: http://…` line within 30 s")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        left = [str(j["job_id"]) for j in self.running_jobs()]
        if left:
            self.ak("jobs", "kill", *left, check=False)
        self.ak("redis", "stop", check=False)

    def running_jobs(self) -> list[dict]:
        return self.ak_json("jobs", "list", "--state", "running")["jobs"]


def poll(predicate, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    base = tmp_path_factory.mktemp("dash")
    (base / "home").mkdir()
    root = base / "app"
    root.mkdir()
    env = _env(base / "home")
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    scene = Scene(root, env)
    specs = [{"id": i, "name": NAMES[i], "depends_on": deps} for i, deps in DEPS.items()]
    (base / "tasks.json").write_text(json.dumps(specs))
    scene.ak("task", "import", str(base / "tasks.json"))
    (base / "plan").mkdir()
    scene.plan = base / "plan" / "plan.json"
    scene.plan.write_text(json.dumps({"*": {"sleep": AGENT_SLEEP}, "broken": {"sleep": 0.5, "exit": 1}}))
    scene.url = scene.dashboard("--port", "0")
    scene.server = scene.last_dashboard
    yield scene
    scene.stop()
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(scene, browser):
    """The dashboard open in a tab, then the run started: everything after the first render arrives live."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(SEEN_SCRIPT)
    tab = context.new_page()
    tab.goto(scene.url)
    tab.wait_for_function("document.body.dataset.ready === '1'", timeout=10_000)
    scene.opened_at = time.time()
    agent = f"{sys.executable} {FAKE} {scene.plan} {{task_name}} {{attempt}}"
    scene.run = scene.background("run", "--agent-cmd", agent, "-c", str(CONCURRENCY), "--yolo",
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield tab
    context.close()


def task_name(text: str) -> str | None:
    """The task a card's text names (`#7 broken`), longest name first (`after-broken` before `broken`)."""
    return next((n for n in sorted(NAMES.values(), key=len, reverse=True) if re.search(rf"\b{n}\b", text)), None)


def cards(tab) -> list[str]:
    return tab.eval_on_selector_all("#agents .agent-card[data-job-id]", "els => els.map(e => e.dataset.jobId)")


def feed_ids(tab) -> list[str]:
    return tab.eval_on_selector_all("#feed li[data-event-id]", "els => els.map(e => e.dataset.eventId)")


def test_one_card_per_running_agent_job_with_its_fields(scene, page):
    def agreed():
        running = sorted(str(j["job_id"]) for j in scene.running_jobs())
        shown = sorted(cards(page))
        again = sorted(str(j["job_id"]) for j in scene.running_jobs())
        return running if running and running == shown == again else None

    running = poll(agreed, timeout=20)
    assert running, f"cards {sorted(cards(page))} never matched the running jobs {scene.running_jobs()}"
    assert 1 <= len(running) <= CONCURRENCY
    card = page.locator(f'.agent-card[data-job-id="{running[0]}"]')
    for part in (".mascot", ".kind", ".task", ".state", ".elapsed", ".attempt", ".worktree", ".redis-db",
                 ".last-line"):
        assert card.locator(part).count() == 1, f"card has no {part}"
    assert poll(lambda: task_name(card.locator(".task").inner_text()), timeout=2), "the card names its task"


def test_a_card_of_a_running_agent_does_not_say_queued(scene, page):
    """An agent queued for a moment at spawn is running once its log prints: its card must say so. (Whether a job
    was queued at all is the supervisor's race, so this finds the fault often, not always; it never fails a
    correct page.)"""
    def wrong():
        running = {str(j["job_id"]) for j in scene.running_jobs()}
        shown = page.eval_on_selector_all(".agent-card[data-job-id]", "els => els.map(e => [e.dataset.jobId, "
                                          "e.querySelector('.state').textContent, "
                                          "e.querySelector('.last-line').textContent])")
        return [c for c in shown if c[0] in running and c[2].strip() and c[1].strip() == "queued"]

    seen: list = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and scene.run.poll() is None:
        now = wrong()
        if now and poll(lambda: not wrong(), timeout=2.0) is False:  # still wrong 2 s later: not a refresh lag
            seen = now
            break
        time.sleep(0.2)
    assert not seen, f"cards of running jobs whose log already printed say queued: {seen}"


def test_clicking_a_card_shows_its_log_tail(scene, page):
    job = poll(lambda: cards(page), timeout=15)
    assert job, "no agent card to click"
    task = poll(lambda: task_name(page.locator(f'.agent-card[data-job-id="{job[0]}"] .task').inner_text()), 2)
    assert task, "the card names its task"
    page.click(f'.agent-card[data-job-id="{job[0]}"]')
    page.wait_for_function("([want]) => document.querySelector('#log') && "
                           "document.querySelector('#log').textContent.includes(want)",
                           arg=[f"fake agent: coding {task} attempt 1"], timeout=5_000)
    assert page.locator("#log").is_visible()
    page.keyboard.press("Escape")


def test_a_task_passing_shows_in_the_feed_within_1s_of_its_event(scene, page):
    def passes():
        evs = scene.ak_json("events", "--limit", "1000")["events"]
        return [e for e in evs if e["ts"] > scene.opened_at and (
            e["kind"] == "task.passed" or (e["kind"] == "feature_update" and e["data"].get("status") == "passing"))]

    seen = poll(lambda: [e for e in passes() if str(e["id"]) in page.evaluate("window.__seenAt")], timeout=30)
    assert seen, f"no pass event reached #feed; pass events: {passes()}, feed: {feed_ids(page)[:10]}"
    at = page.evaluate("window.__seenAt")
    by_task: dict[str, float] = {}
    for e in seen:  # a task's pass is shown when any of its pass events is (task.passed or feature_update)
        late = at[str(e["id"])] / 1000 - e["ts"]
        by_task[e["subject"]] = min(late, by_task.get(e["subject"], late))
    assert max(by_task.values()) < 1.0, f"seconds from event to #feed, by task: {by_task}"
    page.screenshot(path=str(scene.root.parent / "feed.png"))


def test_the_band_shows_scale_status(scene, page):
    keys = ("floor", "current", "used", "ceiling", "physical_max")

    def matched():
        band = page.eval_on_selector("#band", "b => ({...b.dataset})")
        want = scene.ak_json("scale", "status")
        shown = {k: band.get(re.sub(r"_(\w)", lambda m: m[1].upper(), k)) for k in keys}  # physicalMax
        return all(shown[k] == ("" if want[k] is None else str(want[k])) or want[k] is None and shown[k] == "null"
                   for k in keys)

    assert poll(matched, timeout=10), (page.eval_on_selector("#band", "b => ({...b.dataset})"),
                                       scene.ak_json("scale", "status"))
    # a change made from the CLI, not by the run: a worktree of our own takes a slot
    scene.ak("worktree", "new", "by-hand")
    assert poll(matched, timeout=2), ("after `worktree new`", page.eval_on_selector("#band", "b => ({...b.dataset})"),
                                      scene.ak_json("scale", "status"))
    progress = page.eval_on_selector("#progress", "p => ({...p.dataset})")
    assert int(progress["total"]) == TASKS and 0 <= int(progress["passing"]) <= TASKS


def test_the_task_list_shows_every_task_with_its_status(scene, page):
    tasks = {str(t["id"]): t["status"] for t in scene.ak_json("task", "list")["tasks"]}

    def matched():
        shown = dict(page.eval_on_selector_all("#tasks li[data-task-id]",
                                               "els => els.map(e => [e.dataset.taskId, e.dataset.status])"))
        now = {str(t["id"]): t["status"] for t in scene.ak_json("task", "list")["tasks"]}
        return shown == now
    assert poll(matched, timeout=10), (page.inner_html("#tasks")[:2000], tasks)


def test_g_shows_the_graph_with_every_task(scene, page):
    page.keyboard.press("G")
    page.wait_for_selector("#graph svg g.node", timeout=5_000)
    nodes = page.eval_on_selector_all("#graph svg g.node[data-task-id]",
                                      "els => els.map(e => [e.dataset.taskId, e.dataset.status])")
    assert sorted(int(n[0]) for n in nodes) == list(range(1, TASKS + 1))
    assert all(n[1] for n in nodes), "every node carries its status"
    status = dict(nodes)
    marked = page.eval_on_selector_all("#graph svg g.node.critical, #graph svg g.node.bottleneck",
                                       "els => els.map(e => e.dataset.taskId)")
    assert all(status[i] != "passing" for i in marked), f"a passing task is marked critical or bottleneck: {marked}"
    open_ = {i for i in DEPS if status[str(i)] not in ("passing", "dead", "blocked")}
    chained = any(i in open_ and set(deps) & open_ for i, deps in DEPS.items())
    if chained:  # the critical path is the longest chain of open tasks, when one is longer than a single task
        assert page.locator("#graph svg g.node.critical").count() >= 2, "the critical path is marked"
    shot = scene.root.parent / "dashboard.png"  # agents at work, the graph open: the picture the docs show
    page.screenshot(path=str(shot))
    if os.environ.get("DASHBOARD_SCREENSHOT"):  # `DASHBOARD_SCREENSHOT=docs/img/dashboard.png pytest …`
        Path(os.environ["DASHBOARD_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["DASHBOARD_SCREENSHOT"])
    page.keyboard.press("G")


def test_a_reconnect_does_not_duplicate_feed_lines(scene, page):
    # the server goes away while the run goes on, and comes back on the same port: the page's EventSource
    # reconnects by itself (Last-Event-ID) and must show what happened meanwhile once, not twice
    conn = lambda: page.eval_on_selector("#conn", "c => c.dataset.state")  # noqa: E731
    scene.server.terminate()
    scene.server.wait(15)
    assert poll(lambda: conn() != "live", timeout=5), "the page did not notice its stream had gone"
    missed_from = scene.ak_json("events", "--limit", "1000")["events"][-1]["id"]
    assert poll(lambda: scene.ak_json("events", "--since", str(missed_from))["events"], timeout=10), \
        "the run made no event while the server was down"
    scene.server = None
    scene.dashboard("--port", re.search(r":(\d+)/", scene.url).group(1))
    assert poll(lambda: conn() == "live", timeout=10), "the stream did not come back with the server"
    poll(lambda: scene.run.poll() is not None, timeout=40)  # the rest of the run arrives after the outage
    time.sleep(1.5)
    ids = feed_ids(page)
    assert ids and len(ids) == len(set(ids)), f"duplicated feed lines: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert [int(i) for i in ids] == sorted((int(i) for i in ids), reverse=True), "newest first"
    gap = [e["id"] for e in scene.ak_json("events", "--since", str(missed_from), "--limit", "1000")["events"]
           if e["kind"] == "feature_update"]
    assert gap and not set(map(str, gap)) - set(ids), f"task moves made while the server was down, not in #feed: " \
        f"{sorted(set(map(str, gap)) - set(ids))}"
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=10_000)
    time.sleep(1.0)
    ids = feed_ids(page)
    assert ids and len(ids) == len(set(ids)), f"duplicated after reload: {ids}"
    last = page.eval_on_selector("#feed", "f => f.dataset.lastEventId")
    newest = scene.ak_json("events", "--limit", "1000")["events"][-1]["id"]
    assert int(last) == newest, f"#feed data-last-event-id {last}, newest event {newest}"
    assert scene.run.returncode == 1, "a dead task: the run exits 1"
    page.screenshot(path=str(scene.root.parent / "after-run.png"), full_page=True)


def test_a_blocked_task_shows_its_cause(scene, page):
    def blocked():
        rows = page.eval_on_selector_all('#tasks li[data-task-id="8"][data-status="blocked"] .cause',
                                         "els => els.map(e => e.textContent)")
        return rows[0] if rows else None
    cause = poll(blocked, timeout=30)
    assert cause, ("task 8 never shown blocked with a .cause", page.inner_html("#tasks")[:3000])
    assert "7" in cause or "broken" in cause, f"the cause names the dead dependency: {cause!r}"
    assert page.locator('#tasks li[data-task-id="7"][data-status="dead"]').count() == 1


def test_a_worktree_made_by_hand_after_the_run_shows_in_the_band(scene, page):
    """Nothing else happening: only the worktree.created event can tell the page that a slot was taken."""
    assert scene.run.poll() is not None
    scene.ak("worktree", "new", "by-hand-2")
    newest = scene.ak_json("events", "--limit", "1000")["events"][-1]
    last = lambda: int(page.eval_on_selector("#feed", "f => f.dataset.lastEventId"))  # noqa: E731
    used = lambda: page.eval_on_selector("#band", "b => b.dataset.used")  # noqa: E731
    want = str(scene.ak_json("scale", "status")["used"])
    poll(lambda: last() >= newest["id"] and used() == want, timeout=2)
    assert (last(), used()) == (newest["id"], want), \
        f"after {newest['kind']} (event {newest['id']}): #feed data-last-event-id {last()}, #band data-used " \
        f"{used()} (scale status: {want})"


def test_off_loopback_the_page_needs_the_token(scene, browser):
    url = scene.dashboard("--port", "0", "--host", "0.0.0.0", "--token", "s3cret-token")
    assert "token=s3cret-token" in url
    port = re.match(r"http://.*:(\d+)/", url).group(1)
    bare = f"http://127.0.0.1:{port}/"  # reached over loopback, but the server listens off it: the token counts
    context = browser.new_context()
    try:
        tab = context.new_page()
        assert tab.goto(bare).status == 401
        assert tab.goto(bare + "?token=wrong").status == 401
        assert tab.goto(bare + "?token=s3cret-token").status == 200
        tab.wait_for_function("document.body.dataset.ready === '1'", timeout=10_000)
        assert tab.goto(bare).status == 200, "the cookie from ?token= lets the bare URL in"
        assert tab.request.get(bare + "api/snapshot").status == 200
    finally:
        context.close()
    other = browser.new_context()
    try:
        assert other.request.get(bare + "api/snapshot").status == 401
    finally:
        other.close()
