"""Claims: atomic under many processes, idempotent, leases that expire after kill -9, fences, regression picks."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from agentkit.errors import ExitCode

WORKER = r"""
import json, sys
from agentkit import claims, tasks
from agentkit.errors import AgentkitError
from agentkit.repo import Repo

repo = Repo()
got, errors = [], []
while True:
    try:
        c = claims.claim(repo, agent=sys.argv[1])
    except AgentkitError as exc:
        if exc.code == 4:
            break
        errors.append(exc.message)
        break
    got.append(c["task_id"])
    claims.release(repo, c["claim_id"], outcome="pass")
print(json.dumps({"got": got, "errors": errors}))
"""


def add_tasks(repo, cli, n, tmp_path):
    f = tmp_path / "many.json"
    f.write_text(json.dumps([{"name": f"t{i}"} for i in range(n)]))
    assert cli("task", "import", str(f)).code == 0


def test_sixteen_processes_claim_500_tasks_without_duplicates(repo, cli, tmp_path):
    add_tasks(repo, cli, 500, tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"agent-{i}"], cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(16)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    claimed = [t for r in results for t in r["got"]]
    assert [e for r in results for e in r["errors"]] == []
    assert len(claimed) == 500 and len(set(claimed)) == 500
    assert cli("task", "status", "--json").json["counts"]["passing"] == 500
    fences = [e["data"]["fence"] for e in cli("events", "--kind", "claim.created", "--limit", "1000",
                                               "--json").json["events"]]
    assert fences == sorted(fences) and len(set(fences)) == 500, "fences increase monotonically"


def test_claim_json_and_idempotent_reclaim(repo, cli):
    cli("task", "add", "Add login page")
    first = cli("claim", "--agent", "a", "--json")
    assert first.code == 0, first.err
    c = first.json
    assert {"claim_id", "fence", "lease_expires_at", "task_id", "task", "worktree"} <= set(c)
    assert c["task"]["status"] == "in_progress" and c["worktree"] == "task-1-add-login-page"
    assert 1790 < c["lease_expires_at"] - time.time() <= 1800
    again = cli("claim", "--agent", "a", "--json").json
    assert again["claim_id"] == c["claim_id"] and again["existing"] is True
    other = cli("claim", "1", "--agent", "b", "--json")
    assert other.code == ExitCode.CONFLICT and "already claimed by a until" in other.json["error"]["message"]
    assert cli("claim", "--agent", "b", "--json").code == ExitCode.NOTHING_READY
    assert cli("claim", "7", "--agent", "b", "--json").code == ExitCode.NOT_FOUND
    assert cli("claim", "--json").code == ExitCode.USAGE
    assert cli("claim", "--agent", "b", "--lease", "soon", "--json").code == ExitCode.USAGE


def test_claim_of_a_task_that_is_not_ready_says_why(repo, cli):
    cli("task", "add", "a")
    cli("task", "add", "b", "--dep", "1")
    res = cli("claim", "2", "--agent", "x", "--json")
    assert res.code == ExitCode.NOTHING_READY and "waits on 1 (pending)" in res.json["error"]["message"]


def test_lease_expires_after_kill_9_and_reap_recovers_it(repo, cli):
    cli("task", "add", "a")
    code = ("from agentkit import claims; from agentkit.repo import Repo; import time, sys\n"
            "c = claims.claim(Repo(), agent='doomed', lease='1s'); print(c['claim_id'], flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo, stdout=subprocess.PIPE, text=True)
    claim_id = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert cli("task", "show", "1", "--json").json["status"] == "in_progress"
    time.sleep(1.2)
    reaped = cli("reap", "--json")
    assert reaped.code == 0
    assert [(e["claim_id"], e["task_id"], e["status"], e["attempts"]) for e in reaped.json["expired_claims"]] == [
        (claim_id, 1, "pending", 1)]
    assert cli("reap", "--json").json["expired_claims"] == [], "idempotent"
    task = cli("task", "show", "1", "--json").json
    assert task["status"] == "pending" and task["attempts"] == 1 and "doomed" in task["reason"]
    assert cli("claim", "--agent", "next", "--json").json["task_id"] == 1


def test_claim_itself_recovers_expired_leases_and_dead_at_max_attempts(repo, cli):
    cli("task", "add", "a")
    cli("task", "add", "b", "--dep", "1")
    for _ in range(3):
        assert cli("claim", "--agent", "x", "--lease", "0.2s").code == 0
        time.sleep(0.3)
    res = cli("claim", "--agent", "y", "--json")
    assert res.code == ExitCode.NOTHING_READY
    assert cli("task", "show", "1", "--json").json["status"] == "dead"
    assert cli("task", "show", "2", "--json").json["status"] == "blocked"


def test_stale_fence_cannot_overwrite_the_new_holder(repo, cli):
    cli("task", "add", "a")
    zombie = cli("claim", "--agent", "zombie", "--lease", "0.3s", "--json").json
    time.sleep(0.4)
    fresh = cli("claim", "--agent", "fresh", "--json").json
    assert fresh["task_id"] == 1 and fresh["fence"] > zombie["fence"]
    res = cli("release", zombie["claim_id"], "--outcome", "pass", "--json")
    assert res.code == ExitCode.CONFLICT
    assert "now held by fresh" in res.json["error"]["message"]
    res = cli("task", "pass", "1", "--fence", str(zombie["fence"]), "--json")
    assert res.code == ExitCode.CONFLICT
    assert cli("heartbeat", zombie["claim_id"], "--json").code == ExitCode.CONFLICT
    assert cli("task", "show", "1", "--json").json["status"] == "in_progress"
    done = cli("task", "pass", "1", "--fence", str(fresh["fence"]), "--json")
    assert done.code == 0 and done.json["status"] == "passing"


def test_heartbeat_extends_and_release_without_outcome_returns_the_task(repo, cli):
    cli("task", "add", "a")
    c = cli("claim", "--agent", "a", "--lease", "1s", "--json").json
    hb = cli("heartbeat", c["claim_id"], "--lease", "1h", "--json").json
    assert hb["lease_expires_at"] > c["lease_expires_at"] + 3000
    time.sleep(1.1)
    assert cli("reap", "--json").json["expired_claims"] == []
    rel = cli("release", c["claim_id"], "--json")
    assert rel.code == 0 and rel.json["task"]["status"] == "pending" and rel.json["task"]["attempts"] == 0
    assert cli("release", c["claim_id"], "--json").code == ExitCode.CONFLICT
    assert cli("release", "nope", "--json").code == ExitCode.NOT_FOUND


def test_a_heartbeat_renews_a_claim_for_its_own_lease(repo, cli):
    cli("task", "add", "a")
    c = cli("claim", "--agent", "a", "--lease", "2h", "--json").json
    assert c["lease_s"] == 7200
    hb = cli("heartbeat", c["claim_id"], "--json")
    assert hb.code == 0, hb.err
    assert 7190 < hb.json["lease_expires_at"] - time.time() <= 7200, "the claim's 2 h, not claims.lease (30 m)"
    hb = cli("heartbeat", c["claim_id"], "--lease", "10m", "--json").json
    assert hb["lease_s"] == 600 and 590 < hb["lease_expires_at"] - time.time() <= 600
    hb = cli("heartbeat", c["claim_id"], "--json").json
    assert hb["lease_s"] == 600 and 590 < hb["lease_expires_at"] - time.time() <= 600, "--lease is kept"
    shown = cli("task", "show", "1", "--json").json["claim"]
    assert shown["lease_s"] == 600
    assert cli("release", c["claim_id"], "--outcome", "pass").code == 0
    check = cli("claim", "--regression", "--agent", "t", "--lease", "2h", "--json").json["claims"][0]
    hb = cli("heartbeat", check["claim_id"], "--json").json
    assert 7190 < hb["lease_expires_at"] - time.time() <= 7200, "regression claims too"


def test_a_claim_from_before_schema_6_renews_for_claims_lease(repo, cli):
    cli("task", "add", "a")
    c = cli("claim", "--agent", "a", "--lease", "2h", "--json").json
    db = repo / ".agents" / "agentkit.db"
    with sqlite3.connect(db) as conn:  # the database as schema 5 left it: no lease_s
        conn.execute("ALTER TABLE claims DROP COLUMN lease_s")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm006_claim_lease'")
        conn.execute("PRAGMA user_version = 5")
    hb = cli("heartbeat", c["claim_id"], "--json", env={"AGENTKIT_CLAIMS_LEASE": "45m"})
    assert hb.code == 0, hb.err
    assert hb.json["lease_s"] is None and 2690 < hb.json["lease_expires_at"] - time.time() <= 2700
    with sqlite3.connect(db) as conn:
        from agentkit.state.store import SCHEMA_VERSION

        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_release_with_outcomes(repo, cli):
    for name in ("a", "b"):
        cli("task", "add", name)
    c = cli("claim", "--agent", "x", "--json").json
    assert cli("release", c["claim_id"], "--outcome", "fail", "--reason", "tests red", "--json").json[
        "task"]["status"] == "failing"
    c = cli("claim", "--agent", "x", "--json").json
    assert c["task_id"] == 1 and c["task"]["attempts"] == 1, "a failing task is retried (same score, lower id)"
    assert cli("release", c["claim_id"], "--outcome", "skip", "--json").json["task"]["skip_count"] == 1
    c = cli("claim", "--agent", "x", "--json").json
    assert c["task_id"] == 2, "the skipped task scores 10 less"


def test_regression_picks_least_recently_verified_and_failures_reopen(repo, cli):
    for name in ("a", "b", "c", "d"):
        cli("task", "add", name)
    cli("task", "add", "e", "--dep", "2")
    for task_id in (3, 1, 2):  # verified in this order
        cli("task", "pass", str(task_id))
        time.sleep(0.01)
    first = cli("claim", "--regression", "--agent", "tester-1", "--count", "2", "--json").json["claims"]
    assert [c["task_id"] for c in first] == [3, 1]
    second = cli("claim", "--regression", "--agent", "tester-2", "--count", "3", "--json").json["claims"]
    assert [c["task_id"] for c in second] == [2], "leased picks are not handed out twice"
    assert cli("claim", "--regression", "--agent", "t3", "--json").code == ExitCode.NOTHING_READY
    assert 5 in [t["id"] for t in cli("task", "ready", "--json").json["tasks"]]
    res = cli("release", second[0]["claim_id"], "--outcome", "fail", "--reason", "login broke", "--json")
    assert res.json["task"]["status"] == "failing"
    ready = [t["id"] for t in cli("task", "ready", "--json").json["tasks"]]
    assert 5 not in ready and 2 in ready, "dependents wait again; the failing task is work to redo"
    cli("release", first[0]["claim_id"], "--outcome", "pass")
    again = cli("claim", "--regression", "--agent", "t4", "--count", "5", "--json").json["claims"]
    assert [c["task_id"] for c in again] == [3], "1 is still leased, 3 was just re-verified but is the only free one"


def test_release_without_outcome_keeps_a_failing_task_failing(repo, cli):
    cli("task", "add", "a")
    cli("task", "fail", "1", "--reason", "tests red")
    c = cli("claim", "--agent", "x", "--json").json
    assert c["task"]["reason"] == "tests red", "the agent sees why the last attempt failed"
    task = cli("release", c["claim_id"], "--json").json["task"]
    assert (task["status"], task["attempts"], task["reason"]) == ("failing", 1, "tests red")


def test_regression_claims_are_idempotent_per_agent(repo, cli):
    for name in ("a", "b", "c"):
        cli("task", "add", name)
        cli("task", "pass", str(len(name)))
    cli("task", "pass", "2")
    cli("task", "pass", "3")
    first = cli("claim", "--regression", "--agent", "t", "--count", "2", "--json").json
    again = cli("claim", "--regression", "--agent", "t", "--count", "2", "--json").json
    assert again["existing"] is True
    assert [c["claim_id"] for c in again["claims"]] == [c["claim_id"] for c in first["claims"]]
