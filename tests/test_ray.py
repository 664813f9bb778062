"""The `ray` executor (plugins/agentkit-ray) against a real local Ray cluster: a head on 127.0.0.1 and one worker
node beside it, started once for this module and stopped afterwards."""

import json
import os
import uuid
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray", reason="ray is not installed: pip install ./plugins/agentkit-ray (.ci/run does)")
pytest.importorskip("agentkit_ray", reason="the plugin is not installed: pip install ./plugins/agentkit-ray")

from agentkit_ray import executor as ray_executor  # noqa: E402
from agentkit_ray import local_cluster  # noqa: E402

from agentkit import jobs  # noqa: E402
from agentkit.repo import Repo  # noqa: E402
from tests import test_run  # noqa: E402
from tests.test_run import add_tasks, run  # noqa: E402

plan = test_run.plan  # the scripted agents' plan (a fixture)




@pytest.fixture(scope="module")
def cluster():
    made = local_cluster.start(head_cpus=2, worker_cpus=[2])
    yield made
    made.stop()
    assert made.processes() == [], "the cluster's processes are gone"


@pytest.fixture
def ray_env(cluster, monkeypatch):
    monkeypatch.setenv("AGENTKIT_EXECUTORS_RAY_ADDRESS", cluster.address)
    monkeypatch.setenv("AGENTKIT_JOBS_EXECUTOR", "ray")
    return {"AGENTKIT_EXECUTORS_RAY_ADDRESS": cluster.address, "AGENTKIT_JOBS_EXECUTOR": "ray"}


@pytest.fixture
def r(repo, ray_env, monkeypatch):
    monkeypatch.chdir(repo)
    handle = Repo(repo)
    yield handle
    handle.close()


def marked(nonce: str) -> list:
    return [p for p in psutil.process_iter(["cmdline"]) if any(nonce in a for a in p.info["cmdline"] or ())]


def test_exit_codes_signals_and_logs_come_back_from_the_cluster(r):
    ok = jobs.spawn(r, ["sh", "-c", "echo to-out; echo to-err >&2"])
    bad = jobs.spawn(r, ["sh", "-c", "exit 3"])
    one = jobs.spawn(r, ["false"])
    sig = jobs.spawn(r, ["sh", "-c", "kill -9 $$"])
    done = {j["job_id"]: j for j in jobs.wait(r, [ok["job_id"], bad["job_id"], one["job_id"], sig["job_id"]],
                                                timeout=120)["jobs"]}
    assert done[ok["job_id"]]["exit_status"] == 0 and done[ok["job_id"]]["state"] == "succeeded"
    assert (done[bad["job_id"]]["state"], done[bad["job_id"]]["exit_status"]) == ("failed", 3)
    assert done[one["job_id"]]["exit_status"] == 1
    assert (done[sig["job_id"]]["signal"], done[sig["job_id"]]["exit_status"]) == (9, 137)
    log = Path(done[ok["job_id"]]["log_path"]).read_text()
    assert "to-out" in log and "to-err" in log
    assert "Running entrypoint" not in log and "job_manager.py" not in log, "Ray's own lines are left out"
    assert all(j["started_at"] for j in done.values())


def test_the_limit_and_fifo_stay_agentkits_and_jobs_spread_over_both_nodes(r, monkeypatch, cluster):
    monkeypatch.setenv("AGENTKIT_JOBS_MAX_CONCURRENCY", "3")
    r = Repo(r.root)
    ids = [jobs.spawn(r, ["sh", "-c", "sleep 1"])["job_id"] for _ in range(6)]
    done = jobs.wait(r, ids, timeout=180)["jobs"]
    assert [j["state"] for j in done] == ["succeeded"] * 6
    dispatched = sorted(done, key=lambda j: j["dispatched_at"])
    assert [j["job_id"] for j in dispatched] == ids, "FIFO"
    for j in done:  # never more than 3 held a slot at once
        assert sum(1 for o in done if o["dispatched_at"] <= j["dispatched_at"] < o["ended_at"]) <= 3
    from ray.job_submission import JobSubmissionClient

    ray_jobs = {x.submission_id: x for x in JobSubmissionClient(cluster.address).list_jobs()}
    nodes = {ray_jobs[j["handle"]["submission_id"]].driver_node_id for j in done}
    assert len(nodes) == 2, f"jobs ran on {nodes}"


def test_the_timeout_kills_the_whole_tree_and_counts_execution_only(r):
    nonce = str(uuid.uuid4().int % 10**8).zfill(8)  # sleep takes 300.<digits>
    job = jobs.spawn(r, ["sh", "-c", f"sleep 300.{nonce} & sleep 300.{nonce}; wait"], timeout="3s")
    [done] = jobs.wait(r, [job["job_id"]], timeout=120)["jobs"]
    assert (done["state"], done["exit_status"]) == ("timed_out", 124)
    assert done["ended_at"] - done["started_at"] >= 3
    assert marked(nonce) == [], "0 processes left"


def test_kill_stops_the_tree_and_reads_killed(r, cli, ray_env):
    nonce = str(uuid.uuid4().int % 10**8).zfill(8)  # sleep takes 300.<digits>
    job = jobs.spawn(r, ["sh", "-c", f"sleep 300.{nonce} & sleep 300.{nonce}; wait"])
    import time

    deadline = time.monotonic() + 60
    while not marked(nonce) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(marked(nonce)) >= 2
    res = cli("jobs", "kill", str(job["job_id"]), "--grace", "1s", "--json", env=ray_env)
    assert res.code == 0, res.err
    assert jobs.get(r, job["job_id"])["state"] == "killed"
    assert marked(nonce) == []


def test_logs_follow_a_running_job(r, cli, ray_env):
    job = jobs.spawn(r, ["sh", "-c", "for i in 1 2 3; do echo line-$i; sleep 0.5; done"])
    res = cli("jobs", "wait", str(job["job_id"]), env=ray_env)
    assert res.code == 0, res.err
    res = cli("jobs", "logs", str(job["job_id"]), env=ray_env)
    assert [ln for ln in res.out.splitlines() if ln.startswith("line-")] == ["line-1", "line-2", "line-3"]


def test_an_unreachable_cluster_fails_spawn_with_exit_1_and_nothing_queued(repo, cli):
    env = {"AGENTKIT_EXECUTORS_RAY_ADDRESS": "http://127.0.0.1:9", "AGENTKIT_JOBS_EXECUTOR": "ray"}
    res = cli("spawn", "--", "true", env=env)
    assert res.code == 1 and "127.0.0.1:9" in res.err and "Traceback" not in res.err
    listed = cli("jobs", "list", "--json", env=env).json["jobs"]
    assert [j["state"] for j in listed] in ([], ["failed"])


def test_a_vanished_ray_record_is_lost_failed_and_its_claim_released(r):
    from agentkit import claims, tasks

    tasks.add(r, "t")
    claim = claims.claim(r, "agent-1")
    job = jobs.spawn(r, ["sleep", "30"], claim_id=claim["claim_id"])
    with r.store.tx() as conn:
        conn.execute("UPDATE jobs SET handle = ? WHERE job_id = ?",
                     (json.dumps({**job["handle"], "submission_id": "agentkit-0-gone"}), job["job_id"]))
    jobs.refresh(r, [job["job_id"]])
    done = jobs.get(r, job["job_id"])
    assert done["state"] == "failed" and "vanished" in done["reason"]
    assert not claims.is_active(r, claim["claim_id"]), "its claim is released for a retry"


def test_a_ray_version_mismatch_is_a_clear_error(cluster):
    from agentkit.errors import AgentkitError

    with pytest.raises(AgentkitError) as info:
        ray_executor.check_version(cluster.address, "0.0.1")
    assert "Ray version mismatch" in info.value.message and "0.0.1" in info.value.message


def test_health_shows_the_clusters_nodes_and_free_cpus(repo, cli, ray_env):
    res = cli("health", "--json", env=ray_env)
    assert res.code == 0, res.err
    facts = res.json["executors"]["ray"]
    assert facts["reachable"] and facts["nodes"] == 2 and facts["cpus_total"] == 4.0


def test_agentkit_run_on_a_20_task_graph_through_ray(cli, plan, ray_env, cluster):
    specs = [(f"t{i}", [i - 4] if i > 4 and i % 3 == 0 else []) for i in range(1, 21)]
    add_tasks(cli, specs)
    plan.set({"*": {"sleep": 0.2}})
    env = {**ray_env, "AGENTKIT_EXECUTORS_RAY_ENV_EXCLUDE": "PATH"}  # one machine: HOME is the same here
    res = run(cli, plan, "-c", "4", "--yolo", "--executor", "ray", "--json", env=env)
    assert res.code == 0, res.err[-3000:]
    summary = json.loads(res.out.splitlines()[-1])
    assert summary["counts"]["passing"] == 20, summary
    from ray.job_submission import JobSubmissionClient

    nodes = {x.driver_node_id for x in JobSubmissionClient(cluster.address).list_jobs()
             if (x.metadata or {}).get("agentkit_repo") == str(Path(os.getcwd()).resolve())
             or x.submission_id.startswith("agentkit-")}
    assert len(nodes) == 2
