"""The executor contract, held by a plugin that lives outside core (tests/plugins/spool_executor.py): jobs
whose outcome agentkit learns only from `poll`, never from a `jobs.finish` on the executor's side."""

import os
import signal
import time
from pathlib import Path

import pytest

from agentkit import claims, jobs, plugins, tasks
from agentkit.errors import AgentkitError, ExitCode
from agentkit.repo import Repo

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "tests.plugins.spool_executor"


@pytest.fixture
def r(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("AGENTKIT_PLUGINS", PLUGIN)
    monkeypatch.setenv("AGENTKIT_JOBS_EXECUTOR", "spool")
    plugins.reset()
    handle = Repo(repo)
    yield handle
    for row in handle.store.rows("SELECT handle FROM jobs WHERE handle IS NOT NULL"):
        try:
            os.killpg(int(__import__("json").loads(row["handle"])["pgid"]), signal.SIGKILL)
        except (ProcessLookupError, KeyError):
            pass
    handle.close()


def env_for_cli() -> dict:
    return {"PYTHONPATH": str(ROOT), "AGENTKIT_PLUGINS": PLUGIN, "AGENTKIT_JOBS_EXECUTOR": "spool"}


def group_alive(job: dict) -> bool:
    from tests.plugins.spool_executor import _alive

    return _alive(job["handle"]["pgid"])


def test_outcomes_come_from_poll_with_exit_code_and_log(r):
    ok = jobs.spawn(r, ["sh", "-c", "echo hello from spool"])
    bad = jobs.spawn(r, ["sh", "-c", "echo oops >&2; exit 3"])
    assert ok["executor"] == "spool" and jobs.get(r, ok["job_id"])["handle"]["spool"]
    done = jobs.wait(r, [ok["job_id"], bad["job_id"]], timeout=30)
    by_id = {j["job_id"]: j for j in done["jobs"]}
    assert by_id[ok["job_id"]]["state"] == "succeeded" and by_id[ok["job_id"]]["exit_status"] == 0
    assert (by_id[bad["job_id"]]["state"], by_id[bad["job_id"]]["exit_code"]) == ("failed", 3)
    assert done["exit_status"] == 3
    assert "hello from spool" in Path(by_id[ok["job_id"]]["log_path"]).read_text()
    assert "oops" in Path(by_id[bad["job_id"]]["log_path"]).read_text()
    assert by_id[ok["job_id"]]["started_at"] is not None, "the start came from poll's started_at"
    assert list(jobs.jobs_dir(r).glob("*.env.json")) == [], "an end learnt by poll deletes the saved environment"


def test_the_limit_and_fifo_queue_stay_agentkits(r, monkeypatch):
    monkeypatch.setenv("AGENTKIT_JOBS_MAX_CONCURRENCY", "1")
    r1 = Repo(r.root)
    first = jobs.spawn(r1, ["sleep", "0.3"])
    second = jobs.spawn(r1, ["true"])
    assert (first["state"], second["state"]) == ("running", "queued")
    done = jobs.wait(r1, [second["job_id"]], timeout=30)["jobs"][0]
    assert done["state"] == "succeeded", "the first job's end, learnt by poll, freed the slot for the second"
    assert jobs.get(r1, first["job_id"])["ended_at"] <= done["started_at"] + 1


def test_a_timeout_the_executor_does_not_enforce_is_enforced_at_poll(r):
    job = jobs.spawn(r, ["sleep", "30"], timeout="1s")
    done = jobs.wait(r, [job["job_id"]], timeout=30)
    row = jobs.get(r, job["job_id"])
    assert done["jobs"][0]["state"] == "timed_out" and done["exit_status"] == 124
    assert not group_alive(row), "kill stopped the whole group"


def test_kill_is_recorded_from_the_executor_report(r):
    job = jobs.spawn(r, ["sh", "-c", "sleep 30 & sleep 30"])
    out = jobs.kill(r, [job["job_id"]], grace="1s")["jobs"][0]
    assert out["state"] == "killed" and out["exit_status"] == 128 + signal.SIGTERM
    assert not group_alive(jobs.get(r, job["job_id"]))


def test_a_lost_job_is_failed_by_reap_and_its_claim_released(r, cli):
    tasks.add(r, "a")
    claim = claims.claim(r, agent="x")
    job = jobs.spawn(r, ["sleep", "30"], claim_id=claim["claim_id"])
    saved = jobs.env_file(r, jobs.get(r, job["job_id"])["token"])
    assert saved.exists()
    os.killpg(jobs.get(r, job["job_id"])["handle"]["pgid"], signal.SIGKILL)  # the node died: no exit code
    time.sleep(0.2)
    res = cli("reap", "--json", env=env_for_cli())
    assert res.code == 0 and res.json["dead_supervisors"] == [job["job_id"]]
    after = jobs.get(r, job["job_id"])
    assert after["state"] == "failed" and "vanished without an exit code" in after["reason"]
    assert claims.show_task(r, 1)["status"] == "failing" and claims.show_task(r, 1)["claim"] is None
    assert not saved.exists(), "the saved environment (the spawner's secrets) went with the job"
    assert cli("reap", "--json", env=env_for_cli()).json["dead_supervisors"] == [], "idempotent"


def test_a_job_with_a_claim_passes_its_task(r):
    tasks.add(r, "a")
    claim = claims.claim(r, agent="x")
    job = jobs.spawn(r, ["true"], claim_id=claim["claim_id"])
    jobs.wait(r, [job["job_id"]], timeout=30)
    assert claims.show_task(r, 1)["status"] == "passing"


def test_an_unreachable_backend_fails_spawn_and_leaves_nothing_queued(r):
    (r.paths.agents / "spool").mkdir(parents=True, exist_ok=True)
    (r.paths.agents / "spool" / "unreachable").touch()
    with pytest.raises(AgentkitError) as exc:
        jobs.spawn(r, ["true"])
    assert exc.value.code == ExitCode.FAILED and "cannot reach the spool" in exc.value.message
    assert [j["state"] for j in jobs.list_jobs(r)] == ["failed"]


def test_the_plugin_never_records_outcomes_itself():
    source = (ROOT / "tests" / "plugins" / "spool_executor.py").read_text()
    assert "finish(" not in source and ".store" not in source and "started(" not in source
