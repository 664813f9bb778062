"""agentkit run: the orchestrator, driven end to end with scripted agents (tests/agents/fake_agent.py)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import git, wait_until

FAKE = Path(__file__).parent / "agents" / "fake_agent.py"


@pytest.fixture
def plan(tmp_path):
    """Write the agents' plan; returns (agent template, testing template, the record reader)."""
    folder = tmp_path / "plan"
    folder.mkdir()
    path = folder / "plan.json"

    where = str(path)

    class Plan:
        path = where
        coding = f"{sys.executable} {FAKE} {path} {{task_name}} {{attempt}}"
        testing = f"{sys.executable} {FAKE} {path} {{task_name}} 1 testing"

        def set(self, behaviours: dict) -> "Plan":
            path.write_text(json.dumps(behaviours))
            return self

        def records(self) -> list[dict]:
            file = folder / "record.jsonl"
            return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []

    return Plan().set({})


def add_tasks(cli, specs: list[tuple[str, list[int]]]) -> None:
    entries = [{"id": i, "name": name, "depends_on": deps} for i, (name, deps) in enumerate(specs, 1)]
    f = Path(os.environ["HOME"]) / "tasks.json"
    f.write_text(json.dumps(entries))
    res = cli("task", "import", str(f), "--json")
    assert res.code == 0, res.err


def overlap(records: list[dict], kind: str | None = None) -> int:
    """The most agents (of `kind`) that ran at once, from their start/end records."""
    marks = []
    for r in records:
        if kind is None or r["kind"] == kind:
            marks.append((r["t"], 1 if r["event"] == "start" else -1))
    level = best = 0
    for _, step in sorted(marks, key=lambda m: (m[0], m[1])):
        level += step
        best = max(best, level)
    return best


def run(cli, plan, *args, **kw):
    return cli("run", "--agent-cmd", plan.coding, "--testing-cmd", plan.testing, *args, **kw)


def tasks_by_name(cli) -> dict:
    return {t["name"]: t for t in cli("task", "list", "--json").json["tasks"]}


def test_a_30_task_graph_at_c4_all_passes_never_above_4_nor_twice_at_once(cli, plan):
    specs = [(f"t{i}", [i - 3] if i > 3 and i % 2 else []) for i in range(1, 31)]
    add_tasks(cli, specs)
    plan.set({"*": {"sleep": 0.1}})
    res = run(cli, plan, "-c", "4", "--yolo", "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out.splitlines()[-1])
    assert summary["exit_code"] == 0 and summary["counts"]["passing"] == 30
    recs = plan.records()
    starts = [r for r in recs if r["event"] == "start"]
    assert sorted(r["task"] for r in starts) == sorted(f"t{i}" for i in range(1, 31)), "each task ran once"
    assert overlap(recs) <= 4
    assert overlap(recs) >= 2, "agents ran side by side"
    events = [json.loads(line) for line in res.out.splitlines()[:-1]]
    assert {"agent_update", "feature_update", "run.started"} <= {e["kind"] for e in events}


def test_a_dependent_sees_its_dependencys_committed_file(cli, plan, repo):
    add_tasks(cli, [("make-api", []), ("use-api", [1])])
    plan.set({"make-api": {"write": {"api.txt": "v1\n"}}, "use-api": {"expect": ["api.txt"],
                                                                    "write": {"client.txt": "uses api\n"}}})
    res = run(cli, plan, "--yolo")
    assert res.code == 0, res.err
    assert all(t["status"] == "passing" and t["attempts"] == 0 for t in tasks_by_name(cli).values())
    files = git(repo, "ls-tree", "--name-only", "agentkit/integration").split()
    assert {"api.txt", "client.txt", "README.md"} <= set(files)
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main" and not (repo / "api.txt").exists(), \
        "the user's checkout is untouched"
    assert "integrated 2 task(s) into agentkit/integration" in res.err and "git merge agentkit/integration" in res.err


def test_two_tasks_editing_one_line_one_conflicts_and_passes_on_the_new_head(cli, plan, repo):
    add_tasks(cli, [("left", []), ("right", [])])
    plan.set({"left": {"write": {"README.md": "left\n"}, "sleep": 0.2},
              "right": {"write": {"README.md": "right\n"}, "sleep": 0.2}})
    res = run(cli, plan, "-c", "2", "--yolo", "--json")
    assert res.code == 0, res.err
    by_name = tasks_by_name(cli)
    assert sorted(t["attempts"] for t in by_name.values()) == [0, 1], "one conflicted once, then passed"
    conflicted = next(t for t in by_name.values() if t["attempts"] == 1)
    events = [json.loads(line) for line in res.out.splitlines()[:-1]]
    reasons = [e["data"].get("reason") or "" for e in events if e["kind"] == "feature_update"]
    assert any("merge conflict" in r and "README.md" in r for r in reasons)
    assert git(repo, "show", "agentkit/integration:README.md") == conflicted["name"], "the retry won last"
    saved = git(repo, "for-each-ref", "--format=%(refname)", "refs/agentkit/saved/")
    assert saved, "the conflicting attempt's commit was kept"


def test_a_hanging_agent_is_killed_at_its_timeout_and_retried(cli, plan):
    add_tasks(cli, [("hangs", [])])
    plan.set({"hangs": {"hang_attempts": 1}})
    started = time.monotonic()
    res = run(cli, plan, "--yolo", "--timeout", "1s")
    assert res.code == 0, res.err
    assert time.monotonic() - started < 30
    task = tasks_by_name(cli)["hangs"]
    assert task["status"] == "passing" and task["attempts"] == 1
    jobs = cli("jobs", "list", "--json").json["jobs"]
    assert [j["state"] for j in jobs] == ["timed_out", "succeeded"]


def test_a_task_failing_3_times_is_dead_its_dependents_blocked_exit_1(cli, plan):
    add_tasks(cli, [("broken", []), ("after", [1]), ("free", [])])
    plan.set({"broken": {"exit": 1}})
    res = run(cli, plan, "--yolo")
    assert res.code == 1, res.err
    by_name = tasks_by_name(cli)
    assert by_name["broken"]["status"] == "dead" and by_name["broken"]["attempts"] == 3
    assert by_name["after"]["status"] == "blocked" and by_name["free"]["status"] == "passing"
    assert "task 2 (after) waits on 1 (dead after 3 attempts)" in res.err


def test_max_attempts_flag(cli, plan):
    add_tasks(cli, [("broken", [])])
    plan.set({"broken": {"exit": 1}})
    res = run(cli, plan, "--yolo", "--max-attempts", "1")
    assert res.code == 1 and tasks_by_name(cli)["broken"]["attempts"] == 1


def test_nothing_can_progress_exits_4_with_the_diagnosis(cli, plan):
    add_tasks(cli, [("held", []), ("waits", [1])])
    assert cli("claim", "1", "--agent", "bob").code == 0
    res = run(cli, plan, "--yolo", "--json")
    assert res.code == 4, res.err
    summary = json.loads(res.out.splitlines()[-1])
    assert "task 2 (waits) waits on 1 (in_progress)" in summary["stuck"]
    assert any("is claimed by bob" in line for line in summary["stuck"])
    assert "nothing can progress" in res.err or summary["result"] == "nothing can progress"


def test_an_agent_reports_its_outcome_itself(cli, plan):
    add_tasks(cli, [("says-pass", []), ("says-fail", [])])
    plan.set({"says-pass": {"report": "pass", "exit": 1, "env_file_matches": True},
              "says-fail": {"report": "fail", "exit": 0, "env_file_matches": True}})
    res = run(cli, plan, "--yolo", "--max-attempts", "1")
    assert res.code == 1, res.err
    by_name = tasks_by_name(cli)
    assert by_name["says-pass"]["status"] == "passing", "its own report beats its exit code"
    assert by_name["says-fail"]["status"] == "dead"


def test_testing_agents_obey_ratio_count_testing_and_yolo(cli, plan, repo):
    add_tasks(cli, [(f"t{i}", []) for i in range(1, 5)])
    plan.set({"*": {"sleep": 0.1}, "#testing": {"sleep": 0.2}})
    res = run(cli, plan, "-c", "2", "--testing-ratio", "2", "--count-testing")
    assert res.code == 0, res.err
    recs = plan.records()
    testing = [r for r in recs if r["kind"] == "testing" and r["event"] == "start"]
    assert 0 < len(testing) <= 2 * 4
    assert overlap(recs) <= 2, "--count-testing: testing agents share the -c slots"
    db = sqlite3.connect(repo / ".agents" / "agentkit.db")
    verified = db.execute("SELECT count(*) FROM tasks WHERE verified_at IS NOT NULL").fetchone()[0]
    assert verified == 4
    first_test = min(r["t"] for r in testing)
    first_pass = min(r["t"] for r in recs if r["kind"] == "coding" and r["event"] == "end")
    assert first_test >= first_pass, "no testing agent before anything passes"


def test_yolo_runs_no_testing_agent_and_a_failed_regression_sends_the_task_back(cli, plan, repo):
    add_tasks(cli, [("a", []), ("b", [])])
    plan.set({"*": {}})
    assert run(cli, plan, "--yolo").code == 0
    assert not [r for r in plan.records() if r["kind"] == "testing"]
    cli("task", "reset", "1")
    cli("task", "reset", "2")
    plan.set({"*": {}, "#testing": {"exit": 1}})
    res = run(cli, plan, "--testing-ratio", "1", "--max-attempts", "2", "--json")
    events = [json.loads(line) for line in res.out.splitlines()[:-1]]
    regressions = [e for e in events if e["kind"] == "feature_update" and "regression" in (e["data"].get("reason")
                                                                                           or "")]
    assert regressions, "a failed regression made the task failing again"
    assert res.code == 1, res.err
    by_name = tasks_by_name(cli)
    assert all(t["status"] == "dead" and t["attempts"] == 2 and "regression" in t["reason"]
               for t in by_name.values()), "a task that keeps regressing ends dead, not in a loop"
    coding = [r for r in plan.records() if r["kind"] == "coding" and r["event"] == "start"]
    assert len(coding) == 2 + 2 * 2, "first run once each, then each task redone after its first regression"


def test_a_rate_limited_agent_pauses_its_task_without_burning_an_attempt(cli, plan, tmp_path):
    from tests.conftest import write_plugin

    env = write_plugin(tmp_path, "limited_preset", '''
import re
from agentkit.hookspecs import hookimpl
from agentkit.presets import Template

class Limited(Template):
    def classify(self, exit_code, log_tail):
        m = re.search(r"RATE LIMITED until ([0-9.]+)", log_tail)
        return {"kind": "rate_limited", "until": float(m.group(1)), "message": "limited"} if m else None

@hookimpl
def register_presets(register):
    register("limited", Limited())
''')
    add_tasks(cli, [("busy", [])])
    plan.set({"busy": {"rate_limit_once": 1.0}})
    started = time.monotonic()
    res = cli("run", "--agent", "limited", "--agent-cmd", plan.coding, "--yolo", "--json", env=env)
    assert res.code == 0, res.err
    task = tasks_by_name(cli)["busy"]
    assert task["status"] == "passing" and task["attempts"] == 0, "no attempt burned"
    events = [json.loads(line) for line in res.out.splitlines()[:-1]]
    assert [e for e in events if e["kind"] == "run.rate_limited"]
    starts = [r["t"] for r in plan.records() if r["event"] == "start"]
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.9, "claimed again once the limit was over"
    assert time.monotonic() - started < 30


def test_not_logged_in_stops_claiming_at_once_and_burns_nothing(cli, plan, tmp_path):
    from tests.conftest import write_plugin

    env = write_plugin(tmp_path, "login_preset", '''
from agentkit.hookspecs import hookimpl
from agentkit.presets import Template

class NeedsLogin(Template):
    login_hint = "run `fake-agent login`"
    def classify(self, exit_code, log_tail):
        return {"kind": "login", "message": "Not logged in"} if "Not logged in" in log_tail else None

@hookimpl
def register_presets(register):
    register("needs-login", NeedsLogin())
''')
    add_tasks(cli, [(f"t{i}", []) for i in range(1, 6)])
    plan.set({"*": {"login": True}})
    res = cli("run", "--agent", "needs-login", "--agent-cmd", plan.coding, "-c", "1", "--yolo", env=env)
    assert res.code == 1
    assert "fake-agent login" in res.err
    tasks = tasks_by_name(cli).values()
    assert all(t["status"] == "pending" and t["attempts"] == 0 for t in tasks)
    assert len([r for r in plan.records() if r["event"] == "start"]) <= 2, "stopped claiming at once"


def _agent_pids(plan) -> list[psutil.Process]:
    """This test's agents still alive (their command line names its plan file)."""
    return [p for p in psutil.process_iter(["cmdline"]) if plan.path in " ".join(p.info["cmdline"] or [])]


def test_ctrl_c_kills_the_agents_and_releases_claims_without_burning_attempts(repo, plan):
    for i in range(3):
        subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "add", f"t{i}"], cwd=repo, check=True,
                       capture_output=True)
    plan.set({"*": {"sleep": 60, "grandchild": True}})
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "run", "-c", "3", "--yolo", "--agent-cmd",
                             plan.coding], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len([r for r in plan.records() if r["event"] == "start"]) == 3, timeout=60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped" in err
    listed = json.loads(subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "list", "--json"], cwd=repo,
                                       capture_output=True, text=True).stdout)["tasks"]
    assert all(t["status"] == "pending" and t["attempts"] == 0 for t in listed)
    wait_until(lambda: not _agent_pids(plan), timeout=20)

    def sleepers():
        return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "300"]]

    try:  # dying ones may take a moment to be reaped; a leaked one sleeps on for 300 s
        wait_until(lambda: not sleepers(), timeout=10)
    except AssertionError:
        raise AssertionError(f"the agents' grandchildren outlived them: {sleepers()}") from None


def test_kill_9_mid_run_then_run_again_adopts_and_finishes(repo, plan):
    for i in range(6):
        subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "add", f"t{i}"], cwd=repo, check=True,
                       capture_output=True)
    plan.set({"*": {"sleep": 1.5}})
    cmd = [sys.executable, "-m", "agentkit.cli", "run", "-c", "2", "--yolo", "--agent-cmd", plan.coding]
    first = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len([r for r in plan.records() if r["event"] == "end"]) >= 2, timeout=60)
    first.kill()
    first.wait()
    in_flight = [r["task"] for r in plan.records() if r["event"] == "start"]
    second = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    starts = [r["task"] for r in plan.records() if r["event"] == "start"]
    assert sorted(starts) == sorted(f"t{i}" for i in range(6)), "nothing ran twice: passed and in-flight kept"
    assert set(in_flight) <= set(starts)
    assert "adopted" in second.stderr
    assert not _agent_pids(plan)


def test_bad_input_is_refused_before_anything_is_claimed(cli, plan):
    add_tasks(cli, [("a", [])])
    cases = [
        (["--agent", "nope"], 2, "unknown agent preset"),
        (["--agent-cmd", "x {bogus}"], 2, "unknown placeholder"),
        (["--agent-cmd", "definitely-not-a-binary-xyz {task_id}"], 6, "not on PATH"),
        (["--agent-cmd", plan.coding, "--testing-cmd", "no-such-tester-xyz {task_id}", "--testing-ratio", "1"], 6,
         "no-such-tester-xyz"),
        (["--agent-cmd", plan.coding, "--testing-ratio", "7"], 2, "0 to 3"),
        (["--agent-cmd", plan.coding, "-c", "0"], 2, "at least 1"),
        (["--agent-cmd", plan.coding, "--into", "main"], 2, "checked out"),
        (["--agent-cmd", plan.coding, "--timeout", "soon"], 2, "--timeout"),
        (["--agent", "claude", "--spec", "/nonexistent/spec.md"], 6, "not a file"),
    ]
    for args, code, words in cases:
        res = cli("run", *args)
        assert res.code == code, (args, res.err)
        assert words in res.err and "Traceback" not in res.err, (args, res.err)
    task = tasks_by_name(cli)["a"]
    assert task["status"] == "pending" and task["attempts"] == 0
    assert not cli("jobs", "list", "--json").json["jobs"]


def test_above_the_machine_limit_it_warns_and_clamps(cli, plan):
    add_tasks(cli, [("a", [])])
    res = run(cli, plan, "-c", "50", "--yolo", env={"AGENTKIT_RUN_MAX_CONCURRENCY": "3"})
    assert res.code == 0, res.err
    assert "above run.max_concurrency (3)" in res.err


def test_into_none_keeps_branches_apart(cli, plan, repo):
    add_tasks(cli, [("a", []), ("b", [1])])
    plan.set({"a": {"write": {"a.txt": "a"}}, "b": {"expect": ["a.txt"]}})
    res = run(cli, plan, "--into", "none", "--yolo", "--max-attempts", "1")
    assert res.code == 1, "b does not see a's file without integration"
    assert git(repo, "branch", "--list", "agentkit/integration") == ""


def test_the_debug_log_and_notify_cmd(cli, plan, repo, tmp_path):
    add_tasks(cli, [("a", []), ("dies", [])])
    plan.set({"dies": {"exit": 1}})
    sink = tmp_path / "notes.jsonl"
    res = run(cli, plan, "--yolo", "--max-attempts", "1",
              env={"AGENTKIT_RUN_NOTIFY_CMD": f"sh -c 'cat >> {sink}; echo >> {sink}'"})
    assert res.code == 1
    notes = [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]
    assert [n["kind"] for n in notes] == ["task_dead", "run_finished"]
    assert notes[0]["task_id"] == 2 and "dead" in notes[0]["message"]
    logs = list((repo / ".agents" / "logs").glob("run-*.log"))
    text = logs[0].read_text()
    assert "started" in text and "spawn batch" in text and "settled" in text and "finished" in text


def test_usage_is_recorded_per_agent_summed_per_task_and_per_run(cli, plan, tmp_path):
    from tests.conftest import write_plugin

    env = write_plugin(tmp_path, "metered_preset", '''
import re
from agentkit.hookspecs import hookimpl
from agentkit.presets import Template

class Metered(Template):
    def usage(self, log_text):
        m = re.search(r"fake agent: coding (\\S+) attempt (\\d+)", log_text)
        return {"input_tokens": 100, "output_tokens": 10 * int(m.group(2)), "cost_usd": 0.25} if m else None

@hookimpl
def register_presets(register):
    register("metered", Metered())
''')
    add_tasks(cli, [("twice", []), ("once", [])])
    plan.set({"twice": {"fail_attempts": 1}})
    res = cli("run", "--agent", "metered", "--agent-cmd", plan.coding, "--yolo", "--json", env=env)
    assert res.code == 0, res.err
    summary = json.loads(res.out.splitlines()[-1])
    assert summary["usage"] == {"input_tokens": 300, "output_tokens": 40, "cost_usd": 0.75, "agents": 3}
    shown = cli("task", "show", "1", "--json").json
    assert shown["usage"] == {"input_tokens": 200, "output_tokens": 30, "cost_usd": 0.5, "agents": 2}
    assert "2 agent run(s), 200 tokens in, 30 out, $0.5000" in cli("task", "show", "1").out


def test_kill_9_of_the_run_at_random_moments_loses_nothing_and_runs_no_task_twice(repo, plan, chaos_rounds):
    import random

    specs = [(f"t{i}", [i - 4] if i > 4 else []) for i in range(1, 11)]
    entries = [{"id": i, "name": n, "depends_on": d} for i, (n, d) in enumerate(specs, 1)]
    (repo.parent / "tasks.json").write_text(json.dumps(entries))
    subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "import", str(repo.parent / "tasks.json")],
                   cwd=repo, check=True, capture_output=True)
    plan.set({"*": {"sleep": 0.3}} | {n: {"sleep": 0.3, "write": {f"{n}.txt": n}} for n, _ in specs})
    cmd = [sys.executable, "-m", "agentkit.cli", "run", "-c", "3", "--yolo", "--agent-cmd", plan.coding]
    rng = random.Random(15)
    for _ in range(chaos_rounds(4)):
        proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.2))
        proc.kill()
        proc.wait()
    final = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stderr
    spans: dict[str, list] = {}
    for r in plan.records():
        spans.setdefault(r["task"], []).append(r)
    for name, recs in spans.items():
        starts = [r for r in recs if r["event"] == "start"]
        assert len(starts) == 1, f"{name} ran {len(starts)} times: adopted agents are not started again"
    assert set(spans) == {n for n, _ in specs}
    files = set(git(repo, "ls-tree", "--name-only", "agentkit/integration").split())
    assert {f"{n}.txt" for n, _ in specs} <= files, "every passed task's work was merged"
    wait_until(lambda: not _agent_pids(plan), timeout=20)


def test_on_a_terminal_the_live_status_shows_and_the_summary_stays(repo, plan):
    import pty

    subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "add", "a"], cwd=repo, check=True,
                   capture_output=True)
    plan.set({"*": {"sleep": 1.0}})
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "run", "--yolo", "--agent-cmd", plan.coding],
                            cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
                            env={**os.environ, "TERM": "xterm", "COLUMNS": "120"})
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the run closed the terminal: it ended
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=60) == 0
    text = seen.decode(errors="replace")
    assert "agents (1)" in text and "coding" in text, "the live table showed the running agent"
    assert "every task passing" in text and "Traceback" not in text


def test_an_initializer_plans_an_empty_graph_first_then_its_tasks_run(cli, plan, repo):
    py = sys.executable
    init = (f"sh -c '{py} -m agentkit.cli task add schema && {py} -m agentkit.cli task add api --dep 1 && "
            "echo plan > PLAN.md && git add PLAN.md && git commit -qm plan'")
    plan.set({"api": {"expect": ["PLAN.md"]}})
    res = cli("run", "--init-cmd", init, "--agent-cmd", plan.coding, "--yolo", "--json")
    assert res.code == 0, res.err
    names = [t["name"] for t in cli("task", "list", "--json").json["tasks"]]
    assert names == ["schema", "api"]
    events = [json.loads(line) for line in res.out.splitlines()[:-1]]
    first_coding = next(i for i, e in enumerate(events) if e["kind"] == "agent_update" and e["data"].get("kind")
                        == "coding")
    init_end = next(i for i, e in enumerate(events) if e["kind"] == "agent_update" and e["data"].get("kind")
                    == "init" and e["data"]["state"] == "success")
    assert init_end < first_coding, "nothing is claimed before the initializer ends"
    assert "PLAN.md" in git(repo, "ls-tree", "--name-only", "agentkit/integration").split(), "its commit merged"


def test_an_initializer_that_creates_nothing_ends_the_run_with_4(cli, plan):
    res = cli("run", "--init-cmd", "true", "--agent-cmd", plan.coding, "--yolo")
    assert res.code == 4, res.err
    assert "Traceback" not in res.err


def test_a_second_ctrl_c_exits_at_once(repo, plan, tmp_path):
    stubborn = tmp_path / "stubborn.sh"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\necho started >> \"$1\"\nsleep 60\n")
    stubborn.chmod(0o755)
    marks = tmp_path / "marks"
    subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "add", "a"], cwd=repo, check=True,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "run", "--yolo", "--agent-cmd",
                             f"{stubborn} {marks}"], cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_until(lambda: marks.exists(), timeout=60)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # the first one is killing an agent that ignores TERM (2 s of grace)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - started < 1.5, "the second Ctrl-C did not wait for the kill"
    assert "Traceback" not in proc.stderr.read()


def test_a_self_reported_pass_is_applied_only_once_its_branch_is_merged(cli, plan, repo):
    add_tasks(cli, [("api", []), ("client", [1])])
    plan.set({"api": {"write": {"api.txt": "v1\n"}, "report": "pass", "sleep_after": 1.0},
              "client": {"expect": ["api.txt"]}})
    res = run(cli, plan, "--yolo", "--max-attempts", "1", "--json")
    assert res.code == 0, res.err
    by_name = tasks_by_name(cli)
    assert by_name["client"]["status"] == "passing" and by_name["client"]["attempts"] == 0, \
        "the dependent started only once the dependency's code was merged"
    recs = {r["task"]: r for r in plan.records() if r["event"] == "start"}
    api_end = next(r["t"] for r in plan.records() if r["task"] == "api" and r["event"] == "end")
    assert recs["client"]["t"] >= api_end


def test_what_a_passing_agent_left_uncommitted_is_committed_and_merged(cli, plan, repo):
    add_tasks(cli, [("forgetful", []), ("after", [1])])
    plan.set({"forgetful": {"write": {"made.txt": "work\n"}, "no_commit": True}, "after": {"expect": ["made.txt"]}})
    res = run(cli, plan, "--yolo", "--max-attempts", "1")
    assert res.code == 0, res.err
    assert "made.txt" in git(repo, "ls-tree", "--name-only", "agentkit/integration").split()
    log = git(repo, "log", "--format=%s", "agentkit/integration")
    assert "agentkit: task 1, left uncommitted by its agent" in log


def test_a_task_whose_agent_cannot_start_is_retried_with_a_back_off_not_in_a_tight_loop(cli, plan, repo):
    add_tasks(cli, [("busy", []), ("blocked-folder", [])])
    folder = repo.parent / f"{repo.name}-worktrees" / "task-2-blocked-folder"
    folder.mkdir(parents=True)
    (folder / "not-a-checkout.txt").write_text("x")  # its worktree cannot be made while this is here
    plan.set({"busy": {"sleep": 3}})
    res = run(cli, plan, "--yolo", "--json")
    events = [json.loads(line) for line in res.out.splitlines() if line.startswith("{") and '"kind"' in line]
    tries = [e for e in events if e["kind"] == "run.warning" and "could not start" in e["data"]["message"]]
    assert 1 <= len(tries) <= 4, f"{len(tries)} failed starts in 3 s: no back-off"
    assert res.code != 0 and "Traceback" not in res.err
    assert tasks_by_name(cli)["busy"]["status"] == "passing"
    assert tasks_by_name(cli)["blocked-folder"]["attempts"] == 0, "a start that failed burned no attempt"


def test_an_agent_that_ended_while_its_run_was_dead_is_settled_even_past_its_lease(repo, plan):
    subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "add", "a"], cwd=repo, check=True,
                   capture_output=True)
    plan.set({"a": {"sleep": 1.0, "write": {"a.txt": "a"}}})
    env = {**os.environ, "AGENTKIT_CLAIMS_LEASE": "2s"}
    cmd = [sys.executable, "-m", "agentkit.cli", "run", "--yolo", "--agent-cmd", plan.coding]
    first = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: [r for r in plan.records() if r["event"] == "start"], timeout=60)
    first.kill()
    first.wait()
    wait_until(lambda: [r for r in plan.records() if r["event"] == "end"], timeout=60)
    time.sleep(3)  # past the claim's own lease: the ended job holds it for jobs.kept_claim_lease
    second = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    listed = json.loads(subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "list", "--json"], cwd=repo,
                                       capture_output=True, text=True).stdout)["tasks"]
    assert listed[0]["status"] == "passing" and listed[0]["attempts"] == 0, "its verdict was kept, no attempt burned"
    assert len([r for r in plan.records() if r["event"] == "start"]) == 1, "not run again"
    assert "a.txt" in git(repo, "ls-tree", "--name-only", "agentkit/integration").split()


def _supervisor_of(agent: psutil.Process) -> psutil.Process:
    for parent in agent.parents():
        if "agentkit.builtin.local.supervisor" in " ".join(parent.cmdline()):
            return parent
    raise AssertionError(f"no supervisor above {agent}")


def _run_losing_runners(repo, plan, losses: int, *args: str) -> tuple[int, dict]:
    """`agentkit run -c 1` on task 1, killing (-9) the supervisor of each of its first `losses` agents as the
    OOM killer or a reboot would; the run's exit code and the task at its end."""
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "run", "-c", "1", "--yolo", *args,
                             "--agent-cmd", plan.coding], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for n in range(1, losses + 1):
            wait_until(lambda n=n: len([r for r in plan.records() if r["event"] == "start"]) == n, timeout=60)
            _supervisor_of(psutil.Process(plan.records()[-1]["pid"])).kill()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err
    task = json.loads(subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "show", "1", "--json"],
                                     cwd=repo, capture_output=True, text=True).stdout)
    wait_until(lambda: not _agent_pids(plan), timeout=20)
    return proc.returncode, task


def test_a_runner_lost_to_the_oom_killer_gives_its_task_back_without_burning_an_attempt(repo, plan):
    """kill -9 of an agent's supervisor: the run finds the job ended with no exit status, gives the task back
    unburned, and the next agent passes it."""
    subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "add", "t"], cwd=repo, check=True,
                   capture_output=True)
    plan.set({"t": {"hang_once": True}})
    code, task = _run_losing_runners(repo, plan, 1)
    assert code == 0 and task["status"] == "passing" and task["attempts"] == 0, task
    starts = [r for r in plan.records() if r["event"] == "start"]
    assert [r["attempt"] for r in starts] == [1, 1], "the lost attempt was not counted"
    states = [j["state"] for j in json.loads(subprocess.run(
        [sys.executable, "-m", "agentkit.cli", "jobs", "list", "--json"], cwd=repo, capture_output=True,
        text=True).stdout)["jobs"]]
    assert states == ["failed", "succeeded"], states


def test_runners_lost_again_and_again_count_as_failures_at_last(repo, plan):
    """Lost runners give a task back at most tasks.max_attempts times: a task whose agent takes the machine
    down every time ends dead instead of being retried for ever."""
    subprocess.run([sys.executable, "-m", "agentkit.cli", "task", "add", "t"], cwd=repo, check=True,
                   capture_output=True)
    plan.set({"t": {"hang_attempts": 1}})  # a lost attempt is no attempt: it hangs every time
    code, task = _run_losing_runners(repo, plan, 2, "--max-attempts", "1")
    assert code == 1 and task["status"] == "dead" and task["attempts"] == 1, task
