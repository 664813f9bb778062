"""`agentkit doctor` against real parts: a healthy repo, then each breakage reported with its fix, read-only."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from agentkit import doctor, procs
from agentkit.docs import BEGIN
from agentkit.errors import ExitCode
from tests.conftest import wait_until


def by_name(report: dict) -> dict:
    return {c["name"]: c for c in report["checks"]}


def test_outside_a_git_repo_is_a_usage_error(tmp_path):
    from tests.conftest import ak

    res = ak("doctor", "--json", cwd=tmp_path)
    assert res.code == ExitCode.USAGE and "not inside a git repository" in res.json["error"]["message"]


def test_a_fresh_repo_is_healthy_and_doctor_creates_nothing(repo, cli):
    res = cli("doctor", "--json")
    assert res.code == 0 and res.json["healthy"] is True and res.json["schema_version"] == 1
    checks = by_name(res.json)
    assert checks["state_db"]["status"] == "ok" and "no state database yet" in checks["state_db"]["message"]
    assert checks["redis"]["status"] == "warn" and checks["redis"]["fix"] == "agentkit redis start"
    assert checks["agents_md"] == {"name": "agents_md", "status": "warn", "fix": "agentkit install-docs",
                                   "message": f"{repo / 'AGENTS.md'} does not exist: coding agents read agentkit's "
                                              "section there"}
    assert "worktrees" not in checks, "no state: nothing to read"
    assert not (repo / ".agents").exists() and not (repo / "AGENTS.md").exists()


def test_healthy_then_each_breakage_with_its_fix(repo, cli):
    assert cli("worktree", "new", "a").code == 0 and cli("worktree", "new", "b").code == 0
    assert cli("install-docs").code == 0 and cli("task", "add", "build").code == 0
    assert cli("hooks", "install").code == 0
    job = cli("spawn", "--json", "--", "sleep", "60").json
    healthy = cli("doctor", "--json")
    assert healthy.code == 0, healthy.out
    assert {c["name"]: c["status"] for c in healthy.json["checks"]} == dict.fromkeys(
        ["git", "config", "state_db", "redis_server", "redis", "locks", "worktrees", "jobs", "claims", "agents_md",
         "hooks"], "ok")
    human = cli("doctor")
    assert human.code == 0 and "healthy" in human.err and "redis_server" in human.out

    claim = cli("claim", "--agent", "bob", "--lease", "1s", "--json").json
    wt_b = [w for w in cli("worktree", "list", "--json").json["worktrees"] if w["slug"] == "b"][0]
    subprocess.run(["rm", "-rf", wt_b["path"]], check=True)
    row = cli("jobs", "show", str(job["job_id"]), "--json").json
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    wait_until(lambda: not procs.alive(row["supervisor_pid"], row["supervisor_started"]))
    agents_md = repo / "AGENTS.md"
    agents_md.write_text(agents_md.read_text().replace(BEGIN, f"{BEGIN}\nan older agentkit's wording"))
    assert cli("redis", "stop").code == 0
    time.sleep(max(0.0, claim["lease_expires_at"] - time.time()) + 0.1)

    before = (cli("jobs", "list", "--json").json, cli("task", "list", "--json").json, agents_md.read_text())
    res = cli("doctor", "--json")
    assert res.code == ExitCode.FAILED and res.json["healthy"] is False and "Traceback" not in res.err
    checks = by_name(res.json)
    assert (checks["redis"]["status"], checks["redis"]["fix"]) == ("fail", "agentkit redis start")
    assert "not running; 2 worktree(s) use it" in checks["redis"]["message"]
    assert checks["worktrees"]["status"] == "fail"
    assert f"b ({wt_b['path']}: folder gone)" in checks["worktrees"]["message"]
    assert checks["worktrees"]["fix"].startswith("agentkit worktree up b ")
    assert (checks["jobs"]["status"], checks["jobs"]["fix"]) == ("fail", "agentkit reap")
    assert f"its runner (pid {row['supervisor_pid']}) died" in checks["jobs"]["message"]
    assert (checks["claims"]["status"], checks["claims"]["fix"].split(" (")[0]) == ("warn", "agentkit reap")
    assert claim["claim_id"] in checks["claims"]["message"]
    assert (checks["agents_md"]["status"], checks["agents_md"]["fix"]) == ("warn", "agentkit install-docs")
    assert "is out of date" in checks["agents_md"]["message"]
    after = (cli("jobs", "list", "--json").json, cli("task", "list", "--json").json, agents_md.read_text())
    assert [j["state"] for j in after[0]["jobs"]] == ["running"], "doctor recorded nothing"
    assert [t["status"] for t in after[1]["tasks"]] == ["in_progress"], "doctor expired no claim"
    assert after[2] == before[2]

    assert cli("reap").code == 0 and cli("install-docs").code == 0 and cli("redis", "start").code == 0
    assert cli("worktree", "remove", "b").code == 0
    fixed = cli("doctor", "--json")
    assert fixed.code == 0 and {c["status"] for c in fixed.json["checks"]} == {"ok"}, fixed.out


def test_a_newer_state_db_is_reported_not_a_crash(repo, cli):
    assert cli("task", "add", "x").code == 0
    db = repo / ".agents" / "agentkit.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    res = cli("doctor", "--json")
    assert res.code == ExitCode.FAILED and "Traceback" not in res.err
    state = by_name(res.json)["state_db"]
    assert state["status"] == "fail" and "schema version 99, newer than this agentkit" in state["message"]
    assert state["fix"] == "upgrade agentkit (pip install -U agentkit) to use this repository's state"
    assert {"git", "redis", "locks", "agents_md"} <= set(by_name(res.json))
    assert not {"worktrees", "jobs", "claims"} & set(by_name(res.json)), "they would need the state"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99


def test_a_lock_held_after_its_holder_died_is_stale(repo, cli):
    """The holder forked and exited: its child inherited the flock, so waiters block on a pid that is gone."""
    code = ("import os, sys, time; from pathlib import Path; from agentkit.state.locks import named_lock\n"
            "held = named_lock(Path(sys.argv[1]), 'git'); held.__enter__()  # kept: a dropped one lets go\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    null = os.open(os.devnull, os.O_WRONLY); os.dup2(null, 1); os.dup2(null, 2)\n"
            "    time.sleep(60); os._exit(0)\n"
            "print(pid, flush=True); os._exit(0)\n")
    child = int(subprocess.run([sys.executable, "-c", code, str(repo / ".agents")], capture_output=True, text=True,
                               check=True).stdout)
    try:
        res = cli("doctor", "--json")
        locks = by_name(res.json)["locks"]
        assert res.code == ExitCode.FAILED and locks["status"] == "fail"
        assert "git.lock (taken, but its recorded holder pid" in locks["message"] and "is dead" in locks["message"]
        assert locks["fix"].startswith("find who holds it: fuser -v ")
    finally:
        os.kill(child, signal.SIGKILL)
    wait_until(lambda: by_name(cli("doctor", "--json").json)["locks"]["status"] == "ok")


def test_a_check_that_raises_is_a_failed_check(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setattr("agentkit.docs.install", lambda *a, **k: {}["boom"])
    checks = by_name(doctor.run())
    assert checks["agents_md"]["status"] == "fail"
    assert checks["agents_md"]["message"] == "the check itself failed: KeyError: 'boom'"
    assert checks["git"]["status"] == "ok", "the other checks still ran"


def test_the_hooks_check_says_what_is_missing_or_stale(repo, cli):
    first = {c["name"]: c for c in cli("doctor", "--json").json["checks"]}["hooks"]
    assert first["status"] == "warn" and first["fix"] == "agentkit hooks install"
    assert "post-merge" in first["message"] and "post-checkout" in first["message"]
    assert cli("hooks", "install").code == 0
    installed = {c["name"]: c for c in cli("doctor", "--json").json["checks"]}["hooks"]
    assert installed["status"] == "ok", installed
    hook = Path(cli("hooks", "status", "--json").json["hooks"][0]["path"])
    hook.write_text(hook.read_text() + "# an older copy\n")
    stale = {c["name"]: c for c in cli("doctor", "--json").json["checks"]}["hooks"]
    assert stale["status"] == "warn" and "older" in stale["message"] and stale["fix"] == "agentkit hooks install"


def test_a_wedged_managed_redis_is_not_taken_for_an_answer(repo, cli):
    """Its pid alive is not enough: a redis-server stopped with SIGSTOP answers nothing, and doctor says so."""
    assert cli("worktree", "new", "a").code == 0
    pid = cli("redis", "status", "--json").json["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        res = cli("doctor", "--json")
        checks = {c["name"]: c for c in res.json["checks"]}
        assert res.code == 1 and checks["redis"]["status"] == "fail", checks["redis"]
        assert "does not answer PING" in checks["redis"]["message"] and "redis start" in checks["redis"]["fix"]
        assert time.monotonic() - started < 20
    finally:
        os.kill(pid, signal.SIGCONT)


def test_agents_md_is_checked_with_the_configured_pages(repo, cli):
    """doctor asks what `install-docs --check` asks: with docs.agents_pages set, a current AGENTS.md is ok."""
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.md").write_text("# Guide\n\nHow we work.\n")
    (repo / "pyproject.toml").write_text('[tool.agentkit.docs]\nagents_pages = ["docs/guide.md"]\n')
    assert cli("install-docs").code == 0 and cli("install-docs", "--check").code == 0
    checks = {c["name"]: c for c in cli("doctor", "--json").json["checks"]}
    assert checks["agents_md"]["status"] == "ok", checks["agents_md"]
