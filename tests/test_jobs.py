"""Supervised jobs with real processes: limits, FIFO, the valve, timeouts, whole-tree kills, reap, pid reuse."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agentkit import claims, jobs, procs
from agentkit.builtin import local
from agentkit.errors import AgentkitError, ExitCode
from agentkit.repo import Repo
from tests.conftest import wait_until, write_plugin
from tests.test_procs import backend_fixture, cgroups_here, marker, sleep, sleeping

backend = backend_fixture()
TREE = "sleep 1000 & setsid sleep 1000 & (sleep 1000 &); sleep 1000"


@pytest.fixture
def r(repo, monkeypatch):
    monkeypatch.chdir(repo)
    handle = Repo(repo)
    yield handle
    stop_everything(handle)
    handle.close()


def stop_everything(handle) -> None:
    """Supervisors first (once each has checked in, so none starts a job afterwards), then every job's tree
    and cgroup."""
    sql = "SELECT job_id, state, supervisor_pid, supervisor_started FROM jobs"
    deadline = time.monotonic() + 10
    while any(row["state"] == "running" and row["supervisor_pid"] is None for row in handle.store.rows(sql)) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    rows = handle.store.rows(sql)
    for row in rows:
        if procs.alive(row["supervisor_pid"], row["supervisor_started"]):
            os.kill(row["supervisor_pid"], signal.SIGKILL)
    for row in rows:
        local.tree_of(handle, jobs.get(handle, row["job_id"])).kill(0.5)


def fresh(r, monkeypatch, **config):
    for key, value in config.items():
        monkeypatch.setenv(f"AGENTKIT_JOBS_{key.upper()}", str(value))
    return Repo(r.root)


def tree_of(r, job_id) -> list:
    """What is left of a job: processes with its token, in its session or process group, or in its cgroup."""
    return local.tree_of(r, jobs.get(r, job_id)).processes()


def test_25_jobs_through_concurrency_5_never_exceed_5(r, monkeypatch, tmp_path):
    r5 = fresh(r, monkeypatch, max_concurrency=5)
    marks = tmp_path / "marks"
    script = f'echo "+ $(date +%s.%N)" >> {marks}; sleep 0.3; echo "- $(date +%s.%N)" >> {marks}'
    ids = [jobs.spawn(r5, ["sh", "-c", script])["job_id"] for _ in range(25)]
    result = jobs.wait(r5, ids, timeout=60)
    assert result["exit_status"] == 0 and {j["state"] for j in result["jobs"]} == {"succeeded"}
    running, peak = 0, 0
    for line in sorted(marks.read_text().splitlines(), key=lambda ln: (float(ln[2:]), ln[0] == "+")):
        running += 1 if line[0] == "+" else -1
        peak = max(peak, running)
    assert peak == 5, "never more than the limit, and the limit is used"
    assert all(j["executor"] == "local" for j in result["jobs"])


def test_jobs_start_in_submission_order_across_processes(r, monkeypatch, cli, tmp_path):
    """Submitted by separate processes, one after another and then all at once; started by supervisors as
    slots free up: each job writes its id when it really starts."""
    r1 = fresh(r, monkeypatch, max_concurrency=1)
    env = {"AGENTKIT_JOBS_MAX_CONCURRENCY": "1"}
    gate, starts = tmp_path / "gate", tmp_path / "starts"
    blocker = cli("spawn", "--json", "--", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done", env=env)
    record = ["sh", "-c", f"echo $AGENTKIT_JOB_ID >> {starts}"]
    in_turn = [cli("spawn", "--json", "--", *record, env=env).json["job_id"] for _ in range(3)]
    at_once = [subprocess.Popen([sys.executable, "-m", "agentkit.cli", "spawn", "--json", "--", *record],
                                cwd=r.root, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
               for _ in range(5)]
    at_once = [json.loads(p.communicate(timeout=60)[0])["job_id"] for p in at_once]
    assert {j["state"] for j in jobs.list_jobs(r1) if j["job_id"] != blocker.json["job_id"]} == {"queued"}
    gate.touch()
    done = jobs.wait(r1, in_turn + at_once, timeout=60)
    assert done["exit_status"] == 0
    # in turn: the order the test submitted them; at once: the order the state DB admitted them
    assert [int(line) for line in starts.read_text().split()] == in_turn + sorted(at_once)


def test_queue_depth_valve_registers_nothing(r, monkeypatch, cli):
    env = {"AGENTKIT_JOBS_MAX_CONCURRENCY": "1", "AGENTKIT_JOBS_MAX_QUEUE_DEPTH": "2"}
    for _ in range(3):
        assert cli("spawn", "--", "sleep", "30", env=env).code == 0
    res = cli("spawn", "--json", "--", "sleep", "30", env=env)
    assert res.code == ExitCode.QUEUE_FULL
    assert "queue full" in res.json["error"]["message"]
    assert len(jobs.list_jobs(r)) == 3
    time.sleep(0.3)
    before = time.time()
    health = cli("health", "--json", env=env).json
    after = time.time()
    assert (health["active"], health["queued"], health["busy"], health["capacity"]) == (1, 2, True, 1)
    oldest = min(j["submitted_at"] for j in jobs.list_jobs(r) if j["state"] == "queued")
    assert before - oldest - 0.001 <= health["oldest_queued_wait_s"] <= after - oldest + 0.001
    assert health["oldest_queued_wait_s"] >= 0.3, "the wait of the oldest queued job, not of the newest"
    killed = cli("jobs", "kill", "1", "2", "3", "--grace", "1", "--json").json["jobs"]
    assert [j["state"] for j in killed[1:]] == ["killed", "killed"], "queued jobs never start"


def test_timeout_covers_execution_not_queue_wait(r, monkeypatch):
    r1 = fresh(r, monkeypatch, max_concurrency=1)
    first = jobs.spawn(r1, ["sleep", "1.5"])
    second = jobs.spawn(r1, ["sleep", "0.5"], timeout="1s")
    assert second["state"] == "queued"
    done = {j["job_id"]: j for j in jobs.wait(r1, [first["job_id"], second["job_id"]], timeout=60)["jobs"]}
    assert done[second["job_id"]]["state"] == "succeeded"
    assert done[second["job_id"]]["wait_s"] > 1.0, "it waited longer than its timeout, and that did not count"


@pytest.mark.parametrize("how", ["timeout", "kill"])
def test_whole_tree_dies_including_setsid_and_double_forked(r, how, backend):
    job = jobs.spawn(r, ["sh", "-c", TREE], timeout="1s" if how == "timeout" else None)
    wait_until(lambda: len(tree_of(r, job["job_id"])) >= 4)
    if how == "kill":
        jobs.kill(r, [job["job_id"]], grace="2s")
    done = jobs.wait(r, [job["job_id"]], timeout=60)
    assert done["exit_status"] == (124 if how == "timeout" else 128 + signal.SIGTERM)
    assert done["jobs"][0]["state"] == ("timed_out" if how == "timeout" else "killed")
    assert tree_of(r, job["job_id"]) == [], "no orphan left behind"


def test_leftover_background_processes_are_killed_when_the_job_exits(r, backend):
    job = jobs.spawn(r, ["sh", "-c", "setsid sleep 1000 & echo started"])
    done = jobs.wait(r, [job["job_id"]], timeout=60)["jobs"][0]
    assert done["state"] == "succeeded" and "leftover" in done["reason"]
    assert tree_of(r, job["job_id"]) == []


def test_kill_9_of_a_supervisor_is_recovered_by_reap(r, cli, backend):
    job = jobs.spawn(r, ["sh", "-c", TREE])
    wait_until(lambda: len(tree_of(r, job["job_id"])) >= 4)
    row = jobs.get(r, job["job_id"])
    assert jobs.env_file(r, row["token"]).exists()
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    wait_until(lambda: not procs.alive(row["supervisor_pid"], row["supervisor_started"]))
    assert jobs.get(r, job["job_id"])["state"] == "running"
    res = cli("reap", "--json")
    assert res.code == 0 and res.json["dead_supervisors"] == [job["job_id"]]
    after = jobs.get(r, job["job_id"])
    assert after["state"] == "failed" and "runner (pid" in after["reason"] and "orphaned" in after["reason"]
    assert tree_of(r, job["job_id"]) == [] and res.json["orphans_killed"] == 5
    assert not jobs.env_file(r, row["token"]).exists(), "the saved environment went with the job"
    assert cli("reap", "--json").json["dead_supervisors"] == [], "idempotent"


def test_a_dead_supervisors_orphans_are_found_without_their_token(r, cli, backend):
    """Processes that wiped the token, left the session, or both, outlive a kill -9 of their supervisor:
    `reap` finds them by session, by descent and by cgroup. Only a double-forked setsid daemon without the
    token escapes, where no cgroup can be had (docs/jobs.md, what can escape)."""
    mark = marker()
    script = (f"env -i {sleep(mark, 'wiped')} & setsid {sleep(mark, 'setsid')} & "
              f"env -i setsid {sleep(mark, 'wiped_setsid')} & (env -i setsid {sleep(mark, 'daemon')} &); "
              f"{sleep(mark, 'main')}")
    job = jobs.spawn(r, ["sh", "-c", script])
    wait_until(lambda: len(sleeping(mark)) == 5)
    row = jobs.get(r, job["job_id"])
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    wait_until(lambda: not procs.alive(row["supervisor_pid"], row["supervisor_started"]))
    contained = bool((row["handle"] or {}).get("cgroup"))
    assert contained == (backend.name == "linux" and cgroups_here())
    try:
        res = cli("reap", "--json")
        escaped = set() if contained else {"daemon"}
        assert res.code == 0 and res.json["dead_supervisors"] == [job["job_id"]]
        assert set(sleeping(mark)) == escaped
        assert res.json["orphans_killed"] == 6 - len(escaped), "sh and the sleeps"
        assert f"{6 - len(escaped)} orphaned process(es) killed" in jobs.get(r, job["job_id"])["reason"]
        assert not contained or not Path(row["handle"]["cgroup"]).exists()
    finally:
        for proc in sleeping(mark).values():
            proc.kill()


def test_a_job_that_ignores_term_is_killed_137_and_leaves_nothing(r, backend):
    mark = marker()
    job = jobs.spawn(r, ["sh", "-c", f"trap '' TERM; {sleep(mark, 'setsid')} & {sleep(mark, 'main')}"])
    wait_until(lambda: len(sleeping(mark)) == 2)
    jobs.kill(r, [job["job_id"]], grace="0.5s")
    done = jobs.wait(r, [job["job_id"]], timeout=60)
    row = done["jobs"][0]
    assert (row["state"], row["signal"], done["exit_status"]) == ("killed", signal.SIGKILL, 137)
    assert tree_of(r, job["job_id"]) == [] and sleeping(mark) == {}


def test_a_recycled_pid_is_never_signalled(r, cli):
    bystander = subprocess.Popen(["sleep", "60"])
    time.sleep(0.05)  # a recycled pid belongs to a process started after the original one
    try:
        job = jobs.spawn(r, ["sleep", "1000"])
        row = wait_until(lambda: jobs.get(r, job["job_id"])["pid"] and jobs.get(r, job["job_id"]))
        os.kill(row["supervisor_pid"], signal.SIGKILL)
        os.kill(row["pid"], signal.SIGKILL)
        wait_until(lambda: not procs.alive(row["supervisor_pid"], row["supervisor_started"]))
        # pretend both pids were recycled: the row now names the bystander, with its real pid, as its processes
        with r.store.tx() as conn:
            conn.execute("UPDATE jobs SET pid = ?, supervisor_pid = ? WHERE job_id = ?",
                         (bystander.pid, bystander.pid, job["job_id"]))
        assert cli("jobs", "kill", str(job["job_id"]), "--grace", "0.5").code == 0
        assert cli("reap").code == 0
        assert bystander.poll() is None and psutil.Process(bystander.pid).is_running()
        assert jobs.get(r, job["job_id"])["state"] in ("failed", "killed")
    finally:
        bystander.kill()
        bystander.wait()


def test_exit_codes_signals_and_missing_commands_are_recorded(r, cli):
    cases = {
        ("sh", "-c", "exit 3"): ("failed", 3, None, 3),
        ("sh", "-c", "kill -TERM $$"): ("failed", None, 15, 143),
        ("no-such-command-xyz",): ("failed", 127, None, 127),
        ("true",): ("succeeded", 0, None, 0),
    }
    for command, (state, code, sig, status) in cases.items():
        job = jobs.spawn(r, list(command))
        done = jobs.wait(r, [job["job_id"]], timeout=60)["jobs"][0]
        assert (done["state"], done["exit_code"], done["signal"], done["exit_status"]) == (state, code, sig, status)
    missing = jobs.list_jobs(r)[2]
    assert "command not found" in missing["reason"]
    res = cli("spawn", "--wait", "--", "sh", "-c", "exit 7")
    assert res.code == 7


def test_logs_are_complete_and_interleaved(r, cli):
    script = "for i in $(seq 1 500); do echo out $i; echo err $i >&2; done"
    job = jobs.spawn(r, ["sh", "-c", script])
    jobs.wait(r, [job["job_id"]], timeout=60)
    lines = Path(jobs.get(r, job["job_id"])["log_path"]).read_text().splitlines()
    assert len(lines) == 1000 and lines[:2] == ["out 1", "err 1"]
    shown = cli("jobs", "logs", str(job["job_id"]))
    assert shown.code == 0 and shown.out.splitlines() == lines
    follow = cli("jobs", "logs", str(job["job_id"]), "--follow")
    assert follow.out.splitlines() == lines


def test_exit_status_is_recorded_when_the_spawning_shell_is_gone(repo, cli):
    res = cli("spawn", "--json", "--", "sh", "-c", "sleep 0.5; exit 4")
    assert res.code == 0 and res.json["state"] == "running"  # the CLI process has exited by now
    r = Repo(repo)
    done = jobs.wait(r, [res.json["job_id"]], timeout=60)
    assert done["jobs"][0]["state"] == "failed" and done["exit_status"] == 4
    assert cli("jobs", "wait", str(res.json["job_id"])).code == 4
    r.close()


def test_bad_input(r, cli):
    assert cli("jobs", "show", "99", "--json").code == ExitCode.NOT_FOUND
    assert cli("jobs", "wait", "99").code == ExitCode.NOT_FOUND
    assert cli("jobs", "kill", "99").code == ExitCode.NOT_FOUND
    res = cli("spawn", "--json")
    assert res.code == ExitCode.USAGE and "needs a command" in res.json["error"]["message"]
    assert cli("spawn", "--worktree", "ghost", "--json", "--", "true").code == ExitCode.NOT_FOUND
    assert cli("spawn", "--timeout", "later", "--json", "--", "true").code == ExitCode.USAGE
    assert cli("spawn", "--env", "NOEQUALS", "--json", "--", "true").code == ExitCode.USAGE
    assert cli("spawn", "--executor", "nope", "--json", "--", "true").code == ExitCode.USAGE
    assert cli("jobs", "list", "--state", "weird", "--json").code == ExitCode.USAGE
    assert jobs.list_jobs(r) == [], "nothing registered by bad input"


def test_worktree_jobs_get_its_env_and_auto_worktrees_are_released(r, cli):
    wt = cli("worktree", "new", "feat", "--json").json
    job = jobs.spawn(r, ["sh", "-c", 'echo "$REDIS_URL $AGENTKIT_SLUG $EXTRA"; pwd'], worktree="feat",
                     env=["EXTRA=yes"])
    jobs.wait(r, [job["job_id"]], timeout=60)
    out = Path(jobs.get(r, job["job_id"])["log_path"]).read_text().splitlines()
    assert out == [f"{wt['redis_url']} feat yes", wt["path"]]
    auto = jobs.spawn(r, ["sh", "-c", "pwd; echo $AGENTKIT_SLUG"], worktree="auto")
    jobs.wait(r, [auto["job_id"]], timeout=60)
    row = jobs.get(r, auto["job_id"])
    assert row["worktree"] == f"job-{auto['job_id']}" and row["state"] == "succeeded"
    assert Path(row["log_path"]).read_text().split() == [row["cwd"], row["worktree"]]
    assert not Path(row["cwd"]).exists(), "released at the end: no commits to keep"
    keep = jobs.spawn(r, ["sh", "-c", "echo x > f && git add f && git commit -qm work"], worktree="auto")
    jobs.wait(r, [keep["job_id"]], timeout=60)
    kept = jobs.get(r, keep["job_id"])
    assert kept["state"] == "succeeded" and Path(kept["cwd"]).is_dir(), "a worktree with commits is kept"


def test_a_job_with_a_claim_reports_its_outcome(r, cli):
    cli("task", "add", "green")
    cli("task", "add", "red")
    for expected in ("passing", "failing"):
        claim = cli("claim", "--agent", f"agent-{expected}", "--json").json
        job = jobs.spawn(r, ["sh", "-c", "exit 0" if expected == "passing" else "exit 1"], claim_id=claim["claim_id"])
        jobs.wait(r, [job["job_id"]], timeout=60)
        assert cli("task", "show", str(claim["task_id"]), "--json").json["status"] == expected
    with pytest.raises(AgentkitError) as exc:
        jobs.spawn(r, ["true"], claim_id="nope")
    assert exc.value.code == ExitCode.NOT_FOUND


def test_prune_forgets_finished_jobs_and_their_logs(r, cli):
    job = jobs.spawn(r, ["true"])
    jobs.wait(r, [job["job_id"]], timeout=60)
    log = Path(jobs.get(r, job["job_id"])["log_path"])
    assert log.exists()
    assert cli("jobs", "prune", "--older-than", "1h", "--json").json["pruned"] == []
    time.sleep(0.05)
    assert cli("jobs", "prune", "--older-than", "0.01s", "--json").json["pruned"] == [job["job_id"]]
    assert not log.exists() and jobs.list_jobs(r) == []


def test_snapshot_has_a_jobs_section(r, cli):
    jobs.spawn(r, ["sleep", "30"])
    snap = cli("snapshot", "--json").json
    assert snap["jobs"]["active"] == 1 and snap["jobs"]["active_jobs"][0]["command"] == ["sleep", "30"]
    assert "token" not in snap["jobs"]["active_jobs"][0]


def test_an_executor_that_cannot_reach_its_cluster_fails_spawn(repo, cli, tmp_path):
    env = write_plugin(
        tmp_path, "remote_exec",
        "from agentkit.errors import AgentkitError\nfrom agentkit.hookspecs import hookimpl\n\n"
        "class Remote:\n"
        "    def submit(self, repo, job):\n"
        "        raise AgentkitError('cannot reach the cluster at ray://10.0.0.1:10001', 'start the cluster')\n"
        "    def poll(self, repo, job):\n        return {'alive': False}\n"
        "    def kill(self, repo, job, grace):\n        pass\n\n"
        "@hookimpl\ndef register_executors(register):\n    register('remote', Remote())\n")
    res = cli("spawn", "--executor", "remote", "--json", "--", "true", env=env)
    assert res.code == ExitCode.FAILED and "ray://10.0.0.1:10001" in res.json["error"]["message"]
    listed = cli("jobs", "list", "--json", env=env).json["jobs"]
    assert [(j["state"], j["executor"]) for j in listed] == [("failed", "remote")], "nothing stays queued"
    assert "cannot reach the cluster" in listed[0]["reason"]


def test_killing_a_queued_job_releases_its_claim_and_environment(r, monkeypatch, cli):
    r1 = fresh(r, monkeypatch, max_concurrency=1)
    cli("task", "add", "a")
    claim = cli("claim", "--agent", "x", "--json").json
    blocker = jobs.spawn(r1, ["sleep", "30"])
    queued = jobs.spawn(r1, ["true"], claim_id=claim["claim_id"])
    token = jobs.get(r1, queued["job_id"])["token"]
    assert queued["state"] == "queued" and jobs.env_file(r1, token).exists()
    done = jobs.kill(r1, [queued["job_id"]])["jobs"][0]
    assert (done["state"], done["exit_status"], done["reason"]) == ("killed", 143, "killed while queued")
    assert not jobs.env_file(r1, token).exists(), "the saved environment (secrets too) is gone"
    assert cli("task", "show", "1", "--json").json["status"] == "failing", "its claim was released as failed"
    jobs.kill(r1, [blocker["job_id"]], grace="1s")


def test_reap_enforces_a_timeout_the_supervisor_missed(r, cli):
    job = jobs.spawn(r, ["sleep", "1000"], timeout="1h")
    wait_until(lambda: jobs.get(r, job["job_id"])["pid"])
    with r.store.tx() as conn:  # as if the supervisor had slept through its deadline
        conn.execute("UPDATE jobs SET started_at = started_at - 7200 WHERE job_id = ?", (job["job_id"],))
    res = cli("reap", "--json")
    assert res.json["timed_out"] == [job["job_id"]]
    done = jobs.wait(r, [job["job_id"]], timeout=60)["jobs"][0]
    assert done["state"] == "killed" and tree_of(r, job["job_id"]) == []


def test_a_job_that_spawns_jobs_or_starts_redis_does_not_kill_them_when_it_ends(r, cli):
    agentkit = f"{sys.executable} -m agentkit.cli"  # the agentkit under test, whatever PATH holds
    parent = cli("spawn", "--json", "--", "sh", "-c", f"{agentkit} spawn --name child -- sleep 30; sleep 0.5")
    assert parent.code == 0, parent.err
    done = jobs.wait(r, [parent.json["job_id"]], timeout=60)["jobs"][0]
    assert done["state"] == "succeeded" and "leftover" not in (done["reason"] or "")
    child = next(j for j in jobs.list_jobs(r) if j["name"] == "child")
    assert child["state"] == "running", "the child job belongs to its own supervisor, not to its parent"
    jobs.kill(r, [child["job_id"]], grace="1s")
    cli("redis", "stop")
    starter = jobs.spawn(r, ["sh", "-c", f"{agentkit} redis start"])
    done = jobs.wait(r, [starter["job_id"]], timeout=60)["jobs"][0]
    assert done["state"] == "succeeded" and "leftover" not in (done["reason"] or "")
    assert cli("redis", "status", "--json").json["running"] is True


def test_a_killed_job_that_exits_0_on_term_still_reads_killed(r):
    job = jobs.spawn(r, ["sh", "-c", 'trap "exit 0" TERM; while :; do sleep 0.1; done'])
    wait_until(lambda: jobs.get(r, job["job_id"])["pid"])
    jobs.kill(r, [job["job_id"]], grace="2s")
    done = jobs.wait(r, [job["job_id"]], timeout=60)
    assert done["jobs"][0]["state"] == "killed" and done["exit_status"] == 143


def test_durations_refuse_nan_inf_and_huge(repo, cli):
    cli("task", "add", "a")
    for bad in ("nan", "inf", "1e30"):
        assert cli("claim", "--agent", "x", "--lease", bad, "--json").code == ExitCode.USAGE
    assert cli("spawn", "--timeout", "nan", "--json", "--", "true").code == ExitCode.USAGE
    res = cli("task", "show", str(2 ** 70), "--json")
    assert res.code == ExitCode.USAGE and "too large" in res.json["error"]["message"]


def test_a_terminated_supervisor_kills_its_job_and_takes_no_more(r, monkeypatch, cli):
    r1 = fresh(r, monkeypatch, max_concurrency=1)
    first = jobs.spawn(r1, ["sh", "-c", TREE])
    second = jobs.spawn(r1, ["sleep", "0.2"])
    row = wait_until(lambda: jobs.get(r1, first["job_id"])["pid"] and jobs.get(r1, first["job_id"]))
    os.kill(row["supervisor_pid"], signal.SIGTERM)
    done = jobs.wait(r1, [first["job_id"]], timeout=60)["jobs"][0]
    assert done["state"] == "killed" and "SIGTERM" in done["reason"] and tree_of(r1, first["job_id"]) == []
    wait_until(lambda: not procs.alive(row["supervisor_pid"], row["supervisor_started"]))
    assert jobs.get(r1, second["job_id"])["state"] == "queued", "a stopping supervisor starts nothing new"
    assert cli("reap", env={"AGENTKIT_JOBS_MAX_CONCURRENCY": "1"}).code == 0
    assert jobs.wait(r1, [second["job_id"]], timeout=60)["jobs"][0]["state"] == "succeeded"


def test_env_precedence_spawner_then_env_file_then_flags_and_0600_files(r, cli, tmp_path):
    plugin = write_plugin(tmp_path, "layer_env", "from agentkit.hookspecs import hookimpl\n\n@hookimpl\n"
                          "def worktree_env(worktree, config):\n    return {'LAYER': 'file', 'FROM_FILE': 'file'}\n")
    wt = cli("worktree", "new", "feat", "--json", env=plugin)
    assert wt.code == 0, wt.err
    assert stat.S_IMODE(os.stat(wt.json["env_file"]).st_mode) == 0o600, "it may hold a Redis password"
    shell = {**plugin, "LAYER": "shell", "FROM_FILE": "shell", "FROM_SHELL": "shell"}
    script = ('echo "$LAYER $FROM_FILE $FROM_SHELL $AGENTKIT_JOB_ID"; '
              f'stat -c %a "{r.paths.agents}/jobs/$AGENTKIT_JOB_TOKEN.env.json"')
    res = cli("spawn", "--wait", "--json", "--worktree", "feat", "--env", "LAYER=flag", "--env", "AGENTKIT_JOB_ID=99",
              "--", "sh", "-c", script, env=shell)
    assert res.code == 0, res.err
    out = Path(res.json["log_path"]).read_text().splitlines()
    assert out == [f"flag file shell {res.json['job_id']}", "600"], "the saved environment is 0600 while it exists"
    assert list((r.paths.agents / "jobs").glob("*.env.json")) == [], "and gone when the job ends"


def test_wait_any_returns_with_the_first_end_and_wait_all_can_time_out(r, cli):
    slow = jobs.spawn(r, ["sleep", "1000"])["job_id"]
    quick = jobs.spawn(r, ["sh", "-c", "sleep 0.3; exit 3"])["job_id"]
    res = cli("jobs", "wait", "--any", str(slow), str(quick), "--json")
    assert res.code == 3 and res.json["exit_status"] == 3
    assert {j["job_id"]: j["state"] for j in res.json["jobs"]} == {slow: "running", quick: "failed"}
    with pytest.raises(AgentkitError) as exc:
        jobs.wait(r, [slow, quick], timeout=0.5)
    assert exc.value.code == ExitCode.FAILED and "still not finished after 0.5s" in exc.value.message
    assert jobs.get(r, slow)["state"] == "running", "giving up waiting kills nothing"
    jobs.kill(r, [slow], grace="1s")
    assert cli("jobs", "wait", str(slow), str(quick)).code == 143, "all: the first non-zero, in the order given"
    assert cli("jobs", "wait", str(quick), str(slow)).code == 3


def test_the_supervisor_heartbeats_a_claim_so_a_short_lease_outlives_the_job(r, cli, monkeypatch):
    monkeypatch.setenv("AGENTKIT_CLAIMS_LEASE", "2s")  # the supervisor, started from here, has it too
    r1 = Repo(r.root)
    cli("task", "add", "long")
    claim = claims.claim(r1, agent="x")
    job = jobs.spawn(r1, ["sleep", "3"], claim_id=claim["claim_id"])
    assert jobs.wait(r1, [job["job_id"]], timeout=60)["jobs"][0]["state"] == "succeeded"
    beats = r1.store.rows("SELECT ts FROM events WHERE kind = 'claim.heartbeat' AND subject = ?",
                          (claim["claim_id"],))
    assert len(beats) >= 3, "one as the job starts, then three per lease"
    task = claims.show_task(r1, claim["task_id"])
    assert task["status"] == "passing", "the claim was still live at the job's end, 3 s after a 2 s lease"
    assert r1.store.rows("SELECT state, outcome FROM claims") == [{"state": "released", "outcome": "pass"}]
    r1.close()


def test_the_supervisor_renews_a_claim_for_the_claims_own_lease(r, cli):
    """claims.lease is 30 m here: a claim taken for 2 h keeps 2 h, one taken for 2 s is beaten every 2/3 s."""
    cli("task", "add", "long")
    cli("task", "add", "short")
    long = cli("claim", "1", "--agent", "x", "--lease", "2h", "--json").json
    job = cli("spawn", "--claim", long["claim_id"], "--json", "--", "sleep", "1000").json

    def beaten():
        return r.store.rows("SELECT 1 FROM events WHERE kind = 'claim.heartbeat' AND subject = ?",
                            (long["claim_id"],))

    wait_until(beaten)
    renewed = claims.show_task(r, 1)["claim"]["lease_expires_at"] - time.time()
    assert 7100 < renewed <= 7200, "the first beat kept the claim's 2 h"
    jobs.kill(r, [job["job_id"]], grace="0.5s")
    short = cli("claim", "2", "--agent", "y", "--lease", "2s", "--json").json
    job = cli("spawn", "--claim", short["claim_id"], "--json", "--", "sleep", "3").json
    assert cli("jobs", "wait", str(job["job_id"])).code == 0
    beats = r.store.rows("SELECT ts FROM events WHERE kind = 'claim.heartbeat' AND subject = ?",
                         (short["claim_id"],))
    ended = r.store.rows("SELECT state, outcome, lease_expires_at FROM claims WHERE claim_id = ?",
                         (short["claim_id"],))[0]
    assert (ended["state"], ended["outcome"]) == ("released", "pass"), "the lease lasted the job's 3 s"
    assert len(beats) >= 4 and ended["lease_expires_at"] - beats[-1]["ts"] < 2.5, "each beat renewed it for 2 s"


@pytest.mark.parametrize("sweeper", [("reap",), ("jobs", "prune")])
def test_a_killed_spawns_saved_environment_is_deleted_by_reap_and_prune(r, cli, sweeper):
    spawner = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "spawn", "--", "true"], cwd=r.root,
                               env={**os.environ, "AGENTKIT_FAILPOINT": "spawn:env-saved", "SECRET": "hunter2"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = wait_until(lambda: next((r.paths.agents / "jobs").glob("*.env.json"), None))
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and "hunter2" in saved.read_text()
    spawner.kill()
    spawner.wait()
    stray_temp = saved.parent / f".{saved.name}.x1y2z3.tmp"  # what a kill inside the atomic write leaves
    stray_temp.write_text('{"base": {"SECRET": "hunter2"}}')
    assert saved.exists() and jobs.list_jobs(r) == [], "the registration rolled back; the file stayed"
    res = cli(*sweeper, "--json")
    assert res.code == 0 and res.json["env_files_removed"] == 2
    assert not saved.exists() and not stray_temp.exists()
    assert cli(*sweeper, "--json").json["env_files_removed"] == 0
    live = jobs.spawn(r, ["sleep", "30"])
    assert cli(*sweeper, "--json").json["env_files_removed"] == 0, "a running job's environment is kept"
    assert jobs.env_file(r, jobs.get(r, live["job_id"])["token"]).exists()


def test_a_lingering_supervisor_takes_the_next_job_and_then_leaves(r, cli):
    first = cli("spawn", "--json", "--", "true").json["job_id"]
    wait_until(lambda: jobs.get(r, first)["state"] == "succeeded")
    second = cli("spawn", "--json", "--", "true").json["job_id"]
    wait_until(lambda: jobs.get(r, second)["state"] == "succeeded")
    one, two = jobs.get(r, first), jobs.get(r, second)
    assert one["supervisor_pid"] == two["supervisor_pid"], "handed over, not a new supervisor"
    assert two["exit_code"] == 0
    wait_until(lambda: not procs.alive(two["supervisor_pid"], two["supervisor_started"]), timeout=10)
    idle, taken = local.idle_dir(r, "local")
    assert not list(idle.iterdir()) and not list(taken.iterdir()), "it withdrew its offer when it left"


def test_with_jobs_linger_empty_every_job_gets_its_own_supervisor(r, cli):
    env = {"AGENTKIT_JOBS_LINGER": ""}
    first = cli("spawn", "--json", "--", "true", env=env).json["job_id"]
    wait_until(lambda: jobs.get(r, first)["state"] == "succeeded")
    second = cli("spawn", "--json", "--", "true", env=env).json["job_id"]
    wait_until(lambda: jobs.get(r, second)["state"] == "succeeded")
    assert jobs.get(r, first)["supervisor_pid"] != jobs.get(r, second)["supervisor_pid"]


def test_an_idle_supervisor_killed_while_waiting_is_passed_over(r, cli):
    first = cli("spawn", "--json", "--", "true").json["job_id"]
    wait_until(lambda: jobs.get(r, first)["state"] == "succeeded")
    idle, _ = local.idle_dir(r, "local")
    wait_until(lambda: list(idle.iterdir()))
    os.kill(jobs.get(r, first)["supervisor_pid"], signal.SIGKILL)
    wait_until(lambda: not procs.alive(jobs.get(r, first)["supervisor_pid"], jobs.get(r, first)["supervisor_started"]))
    second = cli("spawn", "--json", "--", "true").json["job_id"]
    wait_until(lambda: jobs.get(r, second)["state"] == "succeeded")
    assert jobs.get(r, second)["supervisor_pid"] != jobs.get(r, first)["supervisor_pid"]


def test_a_pool_has_its_own_limit_and_fifo_queue(r):
    jobs.set_pool(r, "p", 1)
    a = jobs.spawn(r, ["sleep", "0.5"], pool="p")
    b = jobs.spawn(r, ["true"], pool="p")
    outside = jobs.spawn(r, ["true"])
    assert a["state"] == "running" and b["state"] == "queued", "the pool's one slot is taken"
    wait_until(lambda: jobs.get(r, outside["job_id"])["state"] == "succeeded")
    assert jobs.get(r, b["job_id"])["state"] == "queued", "a job outside the pool did not free the pool's slot"
    wait_until(lambda: jobs.get(r, b["job_id"])["state"] == "succeeded")
    assert jobs.get(r, b["job_id"])["started_at"] >= jobs.get(r, a["job_id"])["ended_at"]
    with pytest.raises(AgentkitError) as err:
        jobs.set_pool(r, "p", 0)
    assert err.value.code == ExitCode.USAGE


def test_a_job_that_keeps_its_claim_leaves_it_for_its_spawner(r, cli):
    cli("task", "add", "a")
    claim = claims.claim(r, agent="me")
    job = jobs.spawn(r, ["false"], claim_id=claim["claim_id"], keep_claim=True)
    wait_until(lambda: jobs.get(r, job["job_id"])["state"] == "failed")
    assert claims.is_active(r, claim["claim_id"]), "the spawner settles it"
    assert cli("task", "show", "1", "--json").json["status"] == "in_progress"


def test_warm_supervisors_wait_idle_and_take_the_first_jobs(r):
    assert jobs.warm(r, 2) == 2
    idle, _ = local.idle_dir(r, "local")
    waiting = wait_until(lambda: sorted(int(n) for n in os.listdir(idle) if n.isdigit()) if len(
        [n for n in os.listdir(idle) if n.isdigit()]) == 2 else None)
    assert jobs.warm(r, 2) == 0, "two wait already"
    job = jobs.spawn(r, ["true"])
    wait_until(lambda: jobs.get(r, job["job_id"])["state"] == "succeeded")
    assert jobs.get(r, job["job_id"])["supervisor_pid"] in waiting, "a warm supervisor ran it"
    for pid in waiting:  # they leave after jobs.linger
        wait_until(lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
                   timeout=10)


def test_a_queued_job_whose_claim_ran_out_never_starts(r, cli, monkeypatch):
    cli("task", "add", "a")
    claim = claims.claim(r, agent="slow", lease="1s")
    blocker = jobs.spawn(fresh(r, monkeypatch, max_concurrency=1), ["sleep", "2"])
    waiting = jobs.spawn(fresh(r, monkeypatch, max_concurrency=1), ["true"], claim_id=claim["claim_id"])
    assert waiting["state"] == "queued"
    wait_until(lambda: jobs.get(r, waiting["job_id"])["state"] in jobs.FINISHED, timeout=30)
    done = jobs.get(r, waiting["job_id"])
    assert done["state"] == "failed" and "not started" in done["reason"] and done["pid"] is None
    assert jobs.get(r, blocker["job_id"])["state"] in ("running", "succeeded")
