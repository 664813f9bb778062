"""The local executor: each running job has a small detached supervisor process on this machine (supervisor.py),
which owns the job's process tree, enforces its timeout and records its end itself."""

import os
import signal
import subprocess
import sys
import time

from agentkit import procs
from agentkit.errors import AgentkitError
from agentkit.hookspecs import hookimpl

NAME = "local"
SUPERVISOR_MODULE = "agentkit.builtin.local.supervisor"
SUPERVISOR = SUPERVISOR_MODULE.encode()  # what a supervisor's command line holds, checked before signalling it
STARTUP_GRACE_S = 30  # a supervisor that has not checked in by then never will


def idle_dir(repo, executor: str) -> tuple:
    """Where a supervisor with no job left waits (`idle/<pid>`) for a while, and where a job is handed to one
    (`taken/<pid>.<job id>`: one rename, so two submits never take the same supervisor)."""
    base = repo.paths.agents / "jobs" / "runners" / executor
    idle, taken = base / "idle", base / "taken"
    idle.mkdir(parents=True, exist_ok=True)
    taken.mkdir(parents=True, exist_ok=True)
    return idle, taken


def hand_over(repo, job: dict) -> int | None:
    """Give a job that holds its slot to an idle supervisor of its executor, if one waits: its pid, or None.
    That saves a supervisor's start (a Python process) per job when jobs come one after another."""
    idle, taken = idle_dir(repo, job["executor"])
    for name in sorted(n for n in os.listdir(idle) if n.isdigit()):
        try:
            os.rename(idle / name, taken / f"{name}.{job['job_id']}")
        except FileNotFoundError:  # another submit took it, or it left
            continue
        pid, handed = int(name), taken / f"{name}.{job['job_id']}"
        try:
            started = float(handed.read_text())
        except (OSError, ValueError):
            started = None
        if procs.alive(pid, started, SUPERVISOR):
            try:
                os.kill(pid, signal.SIGUSR2)
                return pid
            except ProcessLookupError:
                pass
        handed.unlink(missing_ok=True)  # it died idle: start another
    return None


class LocalExecutor:
    enforces_timeout = True  # the supervisor ends a job at its deadline and records timed_out itself

    def submit(self, repo, job: dict) -> None:
        procs.platform()  # a bad AGENTKIT_PROCS fails here, not in a detached supervisor
        if hand_over(repo, job) is None:
            start_supervisor(repo, job)

    def warm(self, repo, count: int) -> int:
        """Start up to `count` supervisors ahead of a burst of jobs (idle, for jobs.linger), so the first jobs do
        not each wait for a Python process to start; returns how many were started."""
        if not repo.config["jobs.linger"]:
            return 0
        idle, _ = idle_dir(repo, NAME)
        missing = max(count - len([n for n in os.listdir(idle) if n.isdigit()]), 0)
        for _ in range(missing):
            start_supervisor(repo, None)
        return missing

    def poll(self, repo, job: dict) -> dict:
        """`running` while its supervisor lives (the supervisor records the end); `lost` once it is gone."""
        if job["supervisor_pid"] is None:  # dispatched; its supervisor is still starting, or never did
            if time.time() - (job["dispatched_at"] or 0) < STARTUP_GRACE_S:
                return {"state": "running"}
            return {"state": "lost", "reason": "its runner never started"}
        if procs.alive(job["supervisor_pid"], job["supervisor_started"], SUPERVISOR):
            return {"state": "running"}
        return {"state": "lost", "reason": f"its runner (pid {job['supervisor_pid']}) died"}

    def kill(self, repo, job: dict, grace: float) -> int | None:
        if procs.alive(job["supervisor_pid"], job["supervisor_started"], SUPERVISOR):
            os.kill(job["supervisor_pid"], signal.SIGUSR1)  # it reads the grace from the job row
            return None
        # no supervisor: what is left of the job's tree is an orphan of it
        return len(tree_of(repo, job).kill(grace))


def start_supervisor(repo, job: dict | None) -> None:
    """A new detached supervisor process for a job that holds its slot (None: one that starts idle)."""
    log = open(repo.paths.agents / "jobs" / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    what = [str(job["job_id"])] if job is not None else ["--idle", NAME]
    try:
        subprocess.Popen([sys.executable, "-m", SUPERVISOR_MODULE, str(repo.root), *what],
                         cwd=repo.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, env={**procs.outside_jobs_environ(), "PYTHONUNBUFFERED": "1"})
    except OSError as exc:
        raise AgentkitError(f"cannot start a supervisor: {exc.strerror}") from exc
    finally:
        log.close()


def tree_of(repo, job: dict) -> procs.Tree:
    """What marks a local job's processes: its token, its main process's session, its cgroup. The managed
    redis-server is spared even when the job started it (it rewrites its environment for its title)."""
    from agentkit import redis

    return procs.Tree(job["token"], job.get("pid"), job.get("pid_started"), (job.get("handle") or {}).get("cgroup"),
                      spare=lambda: {redis.managed_pid(repo)})


@hookimpl
def register_executors(register) -> None:
    register(NAME, LocalExecutor())
