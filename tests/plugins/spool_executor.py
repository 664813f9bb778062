"""A test executor written only against the documented executor contract, as a remote one would be: it never
calls agentkit.jobs.finish or touches the state DB. Each job runs detached under a small shell wrapper that
leaves its exit code in a spool folder; `poll` reports what it finds there, and agentkit records it."""

import os
import signal
import subprocess
import time
from pathlib import Path

from agentkit.errors import AgentkitError
from agentkit.hookspecs import hookimpl
from agentkit.jobs import job_env

NAME = "spool"
# run detached in a session of its own (setsid -f), not as a child of whoever submitted: like a job elsewhere
WRAPPER = ('echo $$ >"$SPOOL/pgid"; "$@" >"$SPOOL/out" 2>&1; echo $? >"$SPOOL/rc.tmp"; '
           'mv "$SPOOL/rc.tmp" "$SPOOL/rc"')


def _alive(pgid: int) -> bool:
    """Does any process of the group still run? (Zombies do not count: an orphan's parent may reap it late.)"""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except OSError:
            continue
    return False


class SpoolExecutor:
    def submit(self, repo, job: dict) -> dict:
        spool = Path(os.environ.get("SPOOL_ROOT") or repo.paths.agents / "spool") / str(job["job_id"])
        spool.mkdir(parents=True, exist_ok=True)
        if (spool.parent / "unreachable").exists():
            raise AgentkitError(f"cannot reach the spool at {spool.parent}", "create it first")
        env = {**job_env(repo, job), "SPOOL": str(spool)}
        subprocess.run(["setsid", "-f", "sh", "-c", WRAPPER, "sh", *job["command"]], cwd=job["cwd"], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        deadline = time.monotonic() + 10
        while not (spool / "pgid").exists() or not (spool / "pgid").read_text().strip():
            if time.monotonic() > deadline:
                raise AgentkitError(f"the spool job in {spool} did not start")
            time.sleep(0.005)
        return {"spool": str(spool), "pgid": int((spool / "pgid").read_text()), "started_at": time.time()}

    def poll(self, repo, job: dict) -> dict:
        handle = job["handle"]
        spool = Path(handle["spool"])
        rc = spool / "rc"
        if rc.exists():
            code = int(rc.read_text())
            out = (spool / "out").read_text() if (spool / "out").exists() else ""
            end = {"started_at": handle["started_at"], "exit_code": code, "log": out}
            if code == 0:
                return {"state": "succeeded", **end}
            return {"state": "failed", "reason": f"exited with {code}", **end}
        if _alive(handle["pgid"]):
            return {"state": "running", "started_at": handle["started_at"]}
        if (spool / "killed").exists():
            return {"state": "killed", "signal": int(signal.SIGTERM), "reason": "stopped by the spool executor"}
        return {"state": "lost", "reason": f"its process group {handle['pgid']} vanished without an exit code"}

    def kill(self, repo, job: dict, grace: float) -> int:
        handle = job["handle"]
        (Path(handle["spool"]) / "killed").touch()
        if not _alive(handle["pgid"]):
            return 0
        os.killpg(handle["pgid"], signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(handle["pgid"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(handle["pgid"]):
            os.killpg(handle["pgid"], signal.SIGKILL)
        while _alive(handle["pgid"]) and time.monotonic() < deadline + 5:
            time.sleep(0.01)
        return 1


@hookimpl
def register_executors(register) -> None:
    register(NAME, SpoolExecutor())
