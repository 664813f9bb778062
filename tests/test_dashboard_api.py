"""The dashboard's HTTP API against the real server (`agentkit dashboard` in a subprocess) on a real repo."""

import json
import os
import re
import select
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from agentkit.dashboard.auth import is_loopback
from tests.conftest import wait_until


@contextmanager
def dashboard(repo, *args: str, env: dict | None = None):
    """Start `agentkit dashboard --port 0 ARGS` and yield (base URL, the printed URL line)."""
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "dashboard", "--port", "0", *args], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the dashboard printed no URL"
        line = proc.stdout.readline().strip()
        assert line.startswith("dashboard: http://"), (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.removeprefix("dashboard: ")
        base = url.split("?")[0].rstrip("/")
        yield base, url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def local(base: str) -> str:
    """A server bound to every interface answers on loopback too."""
    return base.replace("0.0.0.0", "127.0.0.1")


def frames(response, count: int, timeout: float = 20) -> list[dict]:
    """Read `count` events from an SSE response: [{"id", "data"}] (and "event" if a frame named one)."""
    out, current = [], {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        assert time.monotonic() < deadline, "the stream went quiet"
        if line == "":
            if "data" in current:
                out.append(current)
                if len(out) == count:
                    return out
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return out


def test_reads_match_the_cli_json(repo, cli):
    for name in ("schema", "api", "page"):
        assert cli("task", "add", name).code == 0
    assert cli("task", "dep", "add", "2", "1").code == 0
    assert cli("spawn", "--wait", "--", "sh", "-c", "echo hello").code == 0
    with dashboard(repo) as (base, url):
        assert url == base + "/"  # loopback: no token
        with httpx.Client(base_url=base) as http:
            for path, args in [("/api/snapshot", ["snapshot"]), ("/api/health", ["health"]),
                               ("/api/tasks", ["task", "list"]), ("/api/jobs", ["jobs", "list"]),
                               ("/api/jobs/1", ["jobs", "show", "1"]), ("/api/graph", ["task", "graph"]),
                               ("/api/events?since=2&limit=3", ["events", "--since", "2", "--limit", "3"]),
                               ("/api/tasks/2", ["task", "show", "2"])]:
                got = http.get(path)
                assert got.status_code == 200, (path, got.text)
                want = cli(*args, "--json").json
                if path == "/api/tasks/2":
                    want.pop("usage")  # `task show` adds the run's spending; the page does not show it
                assert got.json() == want, path
            log = http.get("/api/jobs/1/log?tail=3")
            assert log.status_code == 200 and log.text == "lo\n"
            latest = http.get("/api/events?latest=2").json()["events"]
            every = cli("events", "--json", "--limit", "1000").json["events"]
            assert latest == every[-2:]


def test_health_equals_the_cli_with_jobs_queued(repo, cli):
    env = {"AGENTKIT_JOBS_MAX_CONCURRENCY": "1"}
    with dashboard(repo, env=env) as (base, _), httpx.Client(base_url=base) as http:
        for _ in range(3):
            assert http.post("/api/jobs", json={"command": ["sleep", "30"]}).status_code == 201
        got = http.get("/api/health").json()
        want = cli("health", "--json", env=env).json
        assert got.pop("oldest_queued_wait_s") == pytest.approx(want.pop("oldest_queued_wait_s"), abs=5)
        assert got == want == {"schema_version": 1, "busy": True, "active": 1, "queued": 2, "capacity": 1,
                               "max_queue_depth": 100, "executors": {}}
        http.post("/api/jobs/1/kill?grace=1")
        http.post("/api/jobs/2/kill?grace=1")
        http.post("/api/jobs/3/kill?grace=1")


def test_stream_resumes_from_last_event_id_with_no_gap_and_no_duplicate(repo, cli):
    for i in range(5):
        cli("task", "add", f"t{i}")
    with dashboard(repo) as (base, _), httpx.Client(base_url=base, timeout=30) as http:
        with http.stream("GET", "/api/stream?since=0") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            first = frames(resp, 3)
        seen = [int(f["id"]) for f in first]
        for f in first:
            assert "event" not in f, "unnamed frames: one onmessage gets every kind"
            assert int(f["id"]) == f["data"]["id"] and f["data"]["kind"]
        for i in range(5, 8):  # written while nobody listens, by another process
            cli("task", "add", f"t{i}")
        total = len(cli("events", "--json", "--limit", "1000").json["events"])
        with http.stream("GET", "/api/stream?since=0", headers={"Last-Event-ID": str(seen[-1])}) as resp:
            rest = frames(resp, total - len(seen))
        seen += [int(f["id"]) for f in rest]
        rows = cli("events", "--json", "--limit", "1000").json["events"]
        assert seen == [r["id"] for r in rows]  # every event once, in order
        assert [f["data"] for f in first + rest] == rows  # each frame's data is the row `events --json` gives
        with http.stream("GET", "/api/stream") as resp:  # no id: from now on
            cli("task", "add", "later")
            live = frames(resp, 1)
        assert live[0]["data"]["kind"] == "task.added" and int(live[0]["id"]) == rows[-1]["id"] + 1


def test_loopback_means_the_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")
    assert not is_loopback("192.168.0.7")


def test_off_loopback_everything_needs_the_token(repo, cli):
    assert cli("spawn", "--", "sleep", "30").code == 0
    with dashboard(repo, "--host", "0.0.0.0") as (base, url):
        assert "?token=" in url
        token = url.split("?token=")[1]
        base = local(base)
        with httpx.Client(base_url=base) as http:
            for method, path in [("GET", "/"), ("GET", "/api/snapshot"), ("GET", "/api/stream"),
                                 ("GET", "/static/app.js"), ("POST", "/api/jobs/1/kill"),
                                 ("POST", "/api/tasks/1/reset"), ("POST", "/api/jobs")]:
                resp = http.request(method, path)
                assert resp.status_code == 401, (method, path)
                assert resp.json()["error"]["name"] == "unauthorized"
            assert http.post("/api/jobs/1/kill", headers={"Authorization": "Bearer wrong"}).status_code == 401
            http.cookies.set("agentkit_token", "wrong")
            assert http.post("/api/jobs/1/kill").status_code == 401
        assert cli("jobs", "show", "1", "--json").json["state"] == "running"  # the refused kill changed nothing
        with httpx.Client(base_url=base) as http:
            page = http.get(f"/?token={token}")
            assert page.status_code == 200 and 'id="agents"' in page.text
            cookie = page.headers["set-cookie"]
            assert f"agentkit_token={token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert http.get("/api/health").status_code == 200  # the cookie from here on
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
            other = http.post("/api/jobs/1/kill", headers={"Origin": "http://evil.example"})
            assert other.status_code == 403
            assert cli("jobs", "show", "1", "--json").json["state"] == "running"
            port = base.rsplit(":", 1)[1]
            killed = http.post("/api/jobs/1/kill?grace=1", headers={"Origin": f"http://127.0.0.1:{port}"})
            assert killed.status_code == 200 and killed.json()["jobs"][0]["kill_requested_at"]
            wait_until(lambda: cli("jobs", "show", "1", "--json").json["state"] == "killed")


def test_a_token_given_on_loopback_is_enforced(repo):
    with dashboard(repo, "--token", "s3cret") as (base, url):
        assert url.endswith("/?token=s3cret")
        with httpx.Client(base_url=base) as http:
            assert http.get("/api/health").status_code == 401
            assert http.get("/api/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_twenty_jobs_at_concurrency_two_are_all_accepted_and_run_fifo(repo, cli):
    env = {"AGENTKIT_JOBS_MAX_CONCURRENCY": "2"}
    with dashboard(repo, env=env) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
        ids = []
        for i in range(20):
            resp = http.post("/api/jobs", json={"command": ["sh", "-c", "sleep 0.1"], "name": f"j{i}"})
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["job_id"])
        assert http.get("/api/health").json()["active"] <= 2
        waited = http.post("/api/jobs?wait=true", json={"command": ["sh", "-c", "echo last; exit 3"]})
        assert waited.status_code == 200
        assert waited.json()["exit_status"] == 3 and waited.json()["output_tail"] == "last\n"
        # the last two run side by side: the waited one may end first
        wait_until(lambda: all(j["state"] != "running" and j["state"] != "queued"
                               for j in http.get("/api/jobs").json()["jobs"]), timeout=60)
        done = {j["job_id"]: j for j in http.get("/api/jobs").json()["jobs"]}
    jobs = [done[i] for i in ids]
    assert all(j["state"] == "succeeded" for j in jobs)
    assert [j["job_id"] for j in sorted(jobs, key=lambda j: j["dispatched_at"])] == ids
    for earlier, later in zip(jobs, jobs[2:], strict=False):  # a job waits for a slot an earlier one freed
        assert later["started_at"] >= earlier["started_at"]
    for j in jobs:  # never more than two at once
        assert sum(1 for k in jobs if k["started_at"] <= j["started_at"] < k["ended_at"]) <= 2


def test_past_the_queue_valve_429_with_the_queue_state(repo, cli):
    env = {"AGENTKIT_JOBS_MAX_CONCURRENCY": "1", "AGENTKIT_JOBS_MAX_QUEUE_DEPTH": "2"}
    with dashboard(repo, env=env) as (base, _), httpx.Client(base_url=base) as http:
        for _ in range(3):
            assert http.post("/api/jobs", json={"command": ["sleep", "30"]}).status_code == 201
        full = http.post("/api/jobs", json={"command": ["sleep", "30"]})
        assert full.status_code == 429
        body = full.json()
        assert body["error"]["code"] == 8 and body["error"]["name"] == "queue_full" and body["error"]["hint"]
        assert body["health"]["queued"] == 2 and body["health"]["active"] == 1
        assert len(http.get("/api/jobs").json()["jobs"]) == 3  # nothing registered
        for job_id in (1, 2, 3):
            assert http.post(f"/api/jobs/{job_id}/kill?grace=1").status_code == 200


def test_errors_are_json_objects_with_their_status(repo):
    with dashboard(repo) as (base, _), httpx.Client(base_url=base) as http:
        for method, path, payload, status, name in [
                ("GET", "/api/jobs/999", None, 404, "not_found"),
                ("GET", "/api/jobs/999/log", None, 404, "not_found"),
                ("GET", "/api/events?limit=0", None, 400, "usage"),
                ("GET", "/api/events?since=x", None, 400, "usage"),
                ("GET", "/api/stream?since=-1", None, 400, "usage"),
                ("GET", "/api/tasks?status=nope", None, 400, "usage"),
                ("POST", "/api/jobs", {"command": "not a list"}, 400, "usage"),
                ("POST", "/api/jobs", {"command": []}, 400, "usage"),
                ("POST", "/api/jobs/999/kill", None, 404, "not_found"),
                ("POST", "/api/tasks/999/reset", None, 404, "not_found"),
                ("POST", "/api/claims/nope/release", None, 404, "not_found")]:
            resp = http.request(method, path, json=payload)
            assert resp.status_code == status, (path, resp.text)
            error = resp.json()["error"]
            assert error["name"] == name and error["message"] and "Traceback" not in resp.text
        bad = http.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400


def test_actions_are_the_cli_core_calls(repo, cli):
    cli("task", "add", "a")
    cli("task", "add", "b")
    with dashboard(repo) as (base, _), httpx.Client(base_url=base) as http:
        claim = cli("claim", "1", "--agent", "me", "--json").json
        released = http.post(f"/api/claims/{claim['claim_id']}/release")
        assert released.status_code == 200 and released.json()["state"] == "released"
        assert cli("task", "show", "1", "--json").json["status"] == "pending"
        assert http.post("/api/tasks/1/retry").status_code == 409  # pending: nothing to retry
        cli("task", "fail", "1")
        assert cli("task", "show", "1", "--json").json["attempts"] == 1
        retried = http.post("/api/tasks/1/retry")
        assert retried.status_code == 200 and retried.json()["status"] == "pending"
        assert cli("task", "show", "1", "--json").json["attempts"] == 0
        cli("task", "pass", "2")
        reset = http.post("/api/tasks/2/reset", json={"reason": "redo"})
        assert reset.status_code == 200 and reset.json()["status"] == "pending"
        kinds = [e["kind"] for e in cli("events", "--json", "--limit", "1000").json["events"]]
        assert kinds.count("task.reset") == 2 and "claim.released" in kinds
        job = http.post("/api/jobs", json={"command": ["sleep", "30"]}).json()
        wait_until(lambda: http.get("/api/agents").json()["agents"])
        agent = http.get("/api/agents").json()["agents"][0]
        assert agent["job_id"] == job["job_id"] and agent["kind"] == "job"
        killed = http.post(f"/api/jobs/{job['job_id']}/kill?grace=1")
        assert killed.status_code == 200 and killed.json()["jobs"][0]["kill_requested_at"]
        wait_until(lambda: cli("jobs", "show", str(job["job_id"]), "--json").json["state"] == "killed")


def test_the_page_and_its_assets_are_served(repo):
    with dashboard(repo) as (base, _), httpx.Client(base_url=base) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for hook in ('id="agents"', 'id="progress"', 'id="band"', 'id="tasks"', 'id="feed"', 'id="graph"',
                     'id="graph-toggle"', 'id="log"', "/static/app.js", "/static/app.css"):
            assert hook in page.text
        assert http.get("/static/app.js").status_code == 200
        assert http.get("/static/app.css").status_code == 200


def test_without_the_extra_the_command_names_it(repo):
    code = ("import sys; sys.modules['starlette'] = None; sys.argv = ['agentkit', 'dashboard']; "
            "from agentkit.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "starlette" in done.stderr and "pip install 'agentkit[dashboard]'" in done.stderr
    assert done.stdout == ""


def test_a_preset_job_runs_the_presets_command_on_the_prompt(repo, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "claude").write_text("#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in *.md) cat \"$a\";; esac; done\n"
                                 "echo args: \"$@\"\n")
    (fake / "claude").chmod(0o755)
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    with dashboard(repo, env=env) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
        done = http.post("/api/jobs?wait=true", json={"preset": "claude", "prompt": "fix the flaky test"})
        assert done.status_code == 200, done.text
        job = done.json()
        assert job["command"][0] == "claude" and job["exit_status"] == 0
        from agentkit.prompts import FILE

        named = re.search(rf"(/\S+/{re.escape(FILE)})", " ".join(job["command"])).group(1)
        assert named.startswith(str(repo / ".agents" / "jobs"))  # not into the checkout
        assert Path(named).read_text() == "fix the flaky test"
        unknown = http.post("/api/jobs", json={"preset": "nope", "prompt": "x"})
        assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]
        assert http.post("/api/jobs", json={"preset": "claude"}).status_code == 400


def test_sigterm_stops_it_with_a_stream_open(repo):
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "dashboard", "--port", "0"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().strip().removeprefix("dashboard: ").rstrip("/")
        with httpx.Client(base_url=base, timeout=30) as http, http.stream("GET", "/api/stream?since=0") as resp:
            assert resp.status_code == 200
            started = time.monotonic()
            proc.terminate()
            proc.wait(10)
            assert time.monotonic() - started < 5
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_chat_completions_answers_with_the_agents_output(repo):
    """OpenAI's chat completions: the last user message becomes a preset agent's prompt (here the shell preset
    with run.agent_cmd, as `agentkit run` would run it), the job queues like any other, and what the agent
    printed is the assistant's message."""
    env = {"AGENTKIT_RUN_AGENT": "shell", "AGENTKIT_RUN_AGENT_CMD": "sh -c 'echo reply to: $(cat {prompt_file})'"}
    with dashboard(repo, env=env) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
        ask = {"model": "shell", "messages": [{"role": "system", "content": "be brief"},
                                               {"role": "user", "content": "old question"},
                                               {"role": "assistant", "content": "old answer"},
                                               {"role": "user", "content": [{"type": "text", "text": "fix it"}]}]}
        done = http.post("/v1/chat/completions", json=ask)
        assert done.status_code == 200, done.text
        answer = done.json()
        assert answer["object"] == "chat.completion" and answer["model"] == "shell"
        assert answer["choices"][0]["message"] == {"role": "assistant", "content": "reply to: fix it"}
        assert answer["choices"][0]["finish_reason"] == "stop" and answer["agentkit"]["exit_status"] == 0
        job = http.get(f"/api/jobs/{answer['agentkit']['job_id']}").json()
        assert job["state"] == "succeeded"
        assert http.post("/v1/chat/completions", json={"messages": []}).status_code == 400
        assert http.post("/v1/chat/completions", json={**ask, "stream": True}).status_code == 400


def test_a_rebound_name_and_a_cross_site_simple_post_are_refused(repo, cli, tmp_path):
    """DNS rebinding: a page whose own name now resolves to 127.0.0.1 sends its name as Host (and as Origin):
    refused on loopback (421), so it can neither read state nor start a job. A text/plain POST (a browser's
    request that needs no preflight) is refused too (415); a JSON one from curl, with no Origin, works."""
    marker = tmp_path / "pwned"
    job = {"command": ["touch", str(marker)]}
    with dashboard(repo) as (base, _), httpx.Client(base_url=base, timeout=30) as http:
        port = base.rsplit(":", 1)[1]
        evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        assert http.get("/api/snapshot", headers=evil).status_code == 421
        assert http.post("/api/jobs", headers={**evil, "Content-Type": "application/json"},
                         content=json.dumps(job)).status_code == 421
        plain = http.post("/api/jobs", headers={"Content-Type": "text/plain"}, content=json.dumps(job))
        assert plain.status_code == 415
        assert http.get("/api/snapshot", headers={"Host": f"localhost:{port}"}).status_code == 200
        assert cli("jobs", "list", "--json").json["jobs"] == [] and not marker.exists()
        assert http.post("/api/jobs?wait=true", json=job).status_code == 200 and marker.exists()


def test_any_valid_credential_is_enough(repo):
    """A stale cookie does not shadow a valid Bearer token."""
    with dashboard(repo, "--token", "right") as (base, _), httpx.Client(base_url=base, timeout=30) as http:
        stale = {"Cookie": "agentkit_token=old", "Authorization": "Bearer right"}
        assert http.get("/api/health", headers=stale).status_code == 200
        assert http.get("/api/health", headers={"Cookie": "agentkit_token=old"}).status_code == 401


def test_chat_with_a_json_agent_answers_with_its_result_not_its_json(repo, tmp_path):
    """claude speaks JSON (--output-format json): the answer is its `result`, the usage its tokens. The claude
    binary here stands in for the paid service; the preset, the job and the reading are agentkit's own."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "claude").write_text(
        "#!/bin/sh\necho 'a progress line on stderr' >&2\n"
        "echo '{\"type\": \"result\", \"is_error\": false, \"result\": \"done: 2 files fixed\", "
        "\"usage\": {\"input_tokens\": 10, \"output_tokens\": 5}}'\n")
    (fake / "claude").chmod(0o755)
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    with dashboard(repo, env=env) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
        answer = http.post("/v1/chat/completions",
                           json={"model": "claude", "messages": [{"role": "user", "content": "fix"}]}).json()
        assert answer["choices"][0]["message"]["content"] == "done: 2 files fixed", answer
        assert answer["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_requests_waiting_for_their_jobs_hold_no_worker_thread(repo):
    """60 `?wait=true` submissions (more than the server's 40 worker threads) still waiting: reads answer at
    once; the waits end with their jobs."""
    import threading

    env = {"AGENTKIT_JOBS_MAX_CONCURRENCY": "2", "AGENTKIT_JOBS_MAX_QUEUE_DEPTH": "100"}
    with dashboard(repo, env=env) as (base, _):
        gate = Path(repo) / "gate"
        answers: list[int] = []

        def submit():
            with httpx.Client(base_url=base, timeout=120) as own:
                answers.append(own.post("/api/jobs?wait=true", json={
                    "command": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.1; done"]}).status_code)

        waiters = [threading.Thread(target=submit) for _ in range(60)]
        for t in waiters:
            t.start()
        with httpx.Client(base_url=base, timeout=30) as http:
            wait_until(lambda: sum(http.get("/api/health").json()[k] for k in ("queued", "active"))
                       == 60, timeout=60)
            started = time.monotonic()
            assert http.get("/api/snapshot").status_code == 200
            assert time.monotonic() - started < 3, "a read waited behind the waiting requests"
        gate.write_text("go")
        for t in waiters:
            t.join(120)
        assert answers == [200] * 60
