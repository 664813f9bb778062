"""The local executor: each running job has a small detached supervisor process on this machine."""

import os
import signal
import subprocess
import sys
import time

from agentkit import procs
from agentkit.errors import AgentkitError
from agentkit.hookspecs import hookimpl

SUPERVISOR = b"agentkit.supervisor"
STARTUP_GRACE_S = 30  # a supervisor that has not checked in by then never will


class LocalExecutor:
    def submit(self, repo, job: dict) -> None:
        log = open(repo.paths.agents / "jobs" / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            subprocess.Popen([sys.executable, "-m", "agentkit.supervisor", str(repo.root), str(job["job_id"])],
                             cwd=repo.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True, env={**procs.outside_jobs_environ(), "PYTHONUNBUFFERED": "1"})
        except OSError as exc:
            raise AgentkitError(f"cannot start a supervisor: {exc.strerror}") from exc
        finally:
            log.close()

    def poll(self, repo, job: dict) -> dict:
        if job["supervisor_pid"] is None:  # dispatched; its supervisor is still starting, or never did
            return {"alive": time.time() - (job["dispatched_at"] or 0) < STARTUP_GRACE_S}
        return {"alive": procs.alive(job["supervisor_pid"], job["supervisor_started"], SUPERVISOR)}

    def kill(self, repo, job: dict, grace: float) -> None:
        if procs.alive(job["supervisor_pid"], job["supervisor_started"], SUPERVISOR):
            os.kill(job["supervisor_pid"], signal.SIGUSR1)  # it reads the grace from the job row
            return
        procs.terminate(procs.with_token(job["token"]), grace)


@hookimpl
def register_executors(register) -> None:
    register("local", LocalExecutor())
