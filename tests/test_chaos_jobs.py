"""kill -9 at every failpoint of the jobs and claims paths, and at random times during `spawn`, `claim`,
`release` and `reap` (and of supervisors): afterwards `reap` leaves no stuck claim, no orphan process and no
leaked saved environment. A few rounds by default; hundreds with --chaos-long."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentkit import claims, jobs, procs, tasks
from agentkit.errors import AgentkitError, ExitCode
from agentkit.repo import Repo
from tests.conftest import wait_until
from tests.test_jobs import stop_everything, tree_of
from tests.test_procs import cgroups_here, marker, sleep, sleeping

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parks are seen in /proc/PID/wchan")

AGENTKIT = Path(__file__).resolve().parents[1] / "agentkit"
LEASE_S = 2  # every claim here, so that those a killed agent held run out within the test


def _row(r, n: int = 1) -> dict | None:
    """The newest job, once there are `n`."""
    rows = jobs.list_jobs(r)
    return jobs.get(r, rows[-1]["job_id"]) if len(rows) >= n else None


def _saved(r) -> list[Path]:
    return [p for p in jobs.jobs_dir(r).iterdir() if jobs.ENV_SUFFIX in p.name]


# failpoint: (who parks there, what shows once it is there: given the state, this round's job or None, and the
# job's sleep marker)
FAILPOINTS = {
    "spawn:env-saved": ("spawner", lambda r, job, mark: _saved(r)),
    "spawn:registered": ("spawner", lambda r, job, mark: job),
    "dispatch:taken": ("spawner", lambda r, job, mark: job and job["state"] == "running"),
    "supervisor:checked-in": ("supervisor", lambda r, job, mark: job and job["supervisor_pid"]),
    "supervisor:started": ("supervisor", lambda r, job, mark: job and job["pid"]),
    "supervisor:ending": ("supervisor", lambda r, job, mark: job and job["pid"]  # and its leftovers killed
                          and not procs.alive(job["pid"], job["pid_started"]) and not sleeping(mark)),
    "finish:released": ("supervisor", lambda r, job, mark: job and job["pid"] and not _saved(r)),
}


@pytest.fixture
def r(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("AGENTKIT_CLAIMS_LEASE", f"{LEASE_S}s")  # every process started from here has it
    handle = Repo(repo)
    yield handle
    stop_everything(handle)
    handle.close()


def job_script(mark: str, main_s: float) -> list[str]:
    """A job that leaves orphans of every shape the platform can contain, then ends after `main_s`."""
    shapes = (f"env -i {sleep(mark, 'wiped')} & setsid {sleep(mark, 'setsid')} & "
              f"env -i setsid {sleep(mark, 'wiped_setsid')} & ")
    if cgroups_here():  # without a cgroup this one escapes by design (docs/jobs.md, what can escape)
        shapes += f"(env -i setsid {sleep(mark, 'daemon')} &); "
    return ["sh", "-c", f"{shapes}sleep {main_s:.2f}"]


def agentkit(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agentkit.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def parked(pid: int) -> bool:
    """Is the process asleep in failpoints.reach (a nanosleep; its other waits are select()s)?"""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def kill_9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def assert_recovered(r, cli, mark: str, seen: str = "") -> None:
    """What `reap` must leave: every job over with nothing of it alive, no saved environment, every task
    claimable or finished (its claim gone once the leases a killed agent held ran out)."""
    assert cli("reap").code == 0
    active = [j["job_id"] for j in jobs.list_jobs(r) if j["state"] in jobs.ACTIVE]
    if active:  # queued ones reap started, and those whose supervisor lives, end by themselves
        jobs.wait(r, active, timeout=60)
    time.sleep(LEASE_S + 0.1)
    res = cli("reap", "--json")
    assert res.code == 0, res.err
    for job in [jobs.get(r, j["job_id"]) for j in jobs.list_jobs(r)]:
        assert job["state"] in jobs.FINISHED, (seen, job)
        assert tree_of(r, job["job_id"]) == [] and procs.with_token(job["token"]) == [], (seen, job)
        group = (job["handle"] or {}).get("cgroup")
        assert not group or not Path(group).exists(), (seen, job)
    assert sleeping(mark) == {}, seen
    assert _saved(r) == [], seen
    assert r.store.rows("SELECT claim_id FROM claims WHERE state = 'active'") == [], seen
    statuses = [t["status"] for t in tasks.list_tasks(r)]
    assert "in_progress" not in statuses, (seen, statuses)
    ready = sum(1 for s in statuses if s in tasks.READY_STATUSES)
    taken = 0
    while True:  # each ready task can really be claimed, once
        try:
            claims.claim(r, agent=f"after-{taken}")
            taken += 1
        except AgentkitError as exc:
            assert exc.code == ExitCode.NOTHING_READY, (seen, exc.message)
            break
    assert taken == ready, (seen, statuses)


def test_every_failpoint_of_the_jobs_and_claims_paths_is_exercised():
    paths = [AGENTKIT / "jobs.py", AGENTKIT / "claims.py", *(AGENTKIT / "builtin" / "local").glob("*.py"),
             *(AGENTKIT / "tasks").glob("*.py")]
    found = {m for p in paths for m in re.findall(r'failpoints\.reach\("([^"]+)"\)', p.read_text())}
    assert found == set(FAILPOINTS)


@pytest.mark.parametrize("point", FAILPOINTS)
def test_kill_9_at_a_failpoint_is_repaired_by_reap(r, cli, point, chaos_rounds):
    who, there = FAILPOINTS[point]
    mark = marker()
    for i in range(chaos_rounds(1, 30)):
        tasks.add(r, f"{point} {i}")
        claim = claims.claim(r, agent=f"agent-{i}")
        spawner = agentkit("spawn", "--claim", claim["claim_id"], "--", *job_script(mark, 0.5),
                           AGENTKIT_FAILPOINT=point)
        try:
            wait_until(lambda n=i + 1: there(r, _row(r, n), mark))
            victim = spawner.pid if who == "spawner" else _row(r)["supervisor_pid"]
            wait_until(lambda v=victim: parked(v))
            kill_9(victim)
        finally:  # a parked spawner would sleep for an hour (a parked supervisor is the fixture's)
            if spawner.poll() is None and who == "spawner":
                spawner.kill()
            spawner.wait(30)
        if point == "dispatch:taken":  # as if the 30 s a supervisor has to check in had passed
            with r.store.tx() as conn:
                conn.execute("UPDATE jobs SET dispatched_at = dispatched_at - 60 WHERE supervisor_pid IS NULL")
        res = cli("reap", "--json")
        assert res.code == 0, res.err
        if who == "supervisor":
            assert res.json["dead_supervisors"] == [_row(r)["job_id"]]
        active = [j["job_id"] for j in jobs.list_jobs(r) if j["state"] in jobs.ACTIVE]
        if active:  # the next round's job must not be taken by this one's supervisor
            jobs.wait(r, active, timeout=60)
    assert_recovered(r, cli, mark, point)


def test_kill_9_at_random_times_during_spawn_claim_release_and_reap(r, cli, chaos_rounds):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    mark = marker()
    for i in range(chaos_rounds(3)):
        for k in range(2):
            tasks.add(r, f"round {i} task {k}")
        held = claims.claim(r, agent=f"releaser-{i}")["claim_id"]
        for_job = claims.claim(r, agent=f"worker-{i}")["claim_id"]
        actors = [agentkit("spawn", "--claim", for_job, "--", *job_script(mark, rng.uniform(0.2, 1.0))),
                  agentkit("claim", "--agent", f"claimer-{i}"),
                  agentkit("release", held, "--outcome", rng.choice(["pass", "fail"])),
                  agentkit("reap")]
        start = time.monotonic()
        victims = [(rng.uniform(0, 0.8), a.pid, None) for a in actors]  # our children: their pids stay theirs
        victims += [(rng.uniform(0, 0.8), j["supervisor_pid"], j["supervisor_started"])
                    for j in jobs.list_jobs(r, "running") if j["supervisor_pid"] and rng.random() < 0.5]
        for at, pid, started in sorted(victims):
            time.sleep(max(0.0, at - (time.monotonic() - start)))
            if started is None or procs.alive(pid, started):
                kill_9(pid)
        for actor in actors:
            actor.wait(30)
        assert cli("reap").code == 0
    assert_recovered(r, cli, mark, f"seed {seed}")
