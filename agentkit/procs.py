"""Process identity as (pid, start time), so a recycled pid is never mistaken for the process we meant."""

import os


def start_time(pid: int) -> float | None:
    """When `pid` started (clock ticks since boot on Linux, read from /proc; psutil's create_time elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return float(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, after the parenthesised name
    except FileNotFoundError:
        return None
    except OSError:
        pass
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def alive(pid: int | None, started: float | None, cmdline_has: bytes | None = None) -> bool:
    """True if the process that had `pid` when it started at `started` still runs (and is not a zombie).

    Start times tick every 10 ms on Linux; `cmdline_has` adds a check of what the process is, for callers
    about to signal it."""
    if not pid:
        return False
    now = start_time(pid)
    if now is None or started is None or now != started:
        return False
    if cmdline_has is not None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if cmdline_has not in fh.read():
                    return False
        except FileNotFoundError:
            return False
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2:][:1] != b"Z"
    except OSError:
        return True


NO_JOB = {"AGENTKIT_JOB_ID": "", "AGENTKIT_JOB_TOKEN": ""}  # the environment mark of "belongs to no job"


def outside_jobs_environ() -> dict:
    """This process's environment, marked as belonging to no job: a process agentkit starts from inside a job
    (a supervisor, the managed redis-server) must not be killed with that job's tree."""
    return {**os.environ, **NO_JOB}


def job_token(proc) -> str | None:
    """The AGENTKIT_JOB_TOKEN in a process's environment: a job's token, "" for no job, None if unset."""
    import psutil

    try:
        return proc.environ().get("AGENTKIT_JOB_TOKEN")
    except (psutil.Error, OSError):
        return None


def with_token(token: str) -> list:
    """Every live process whose environment carries this job's token: its whole tree, wherever it was
    re-parented (setsid, double fork, a dead supervisor)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AGENTKIT_JOB_TOKEN") == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def descendants(pid: int | None = None) -> list:
    """Live descendants of `pid` (default: this process), which as a subreaper includes adopted orphans."""
    import psutil

    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def terminate(processes: list, grace: float) -> dict[int, int | None]:
    """TERM every process, wait up to `grace` seconds, KILL the survivors. Returns each pid's exit code as
    far as it is known (negative: the signal that ended it), which matters for our own children, whom the
    wait reaps.

    psutil checks each process's identity (pid + create time) before signalling, so a pid that was recycled
    since the list was made is never signalled."""
    import psutil

    if not processes:
        return {}
    for proc in processes:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    gone, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    gone_late, _ = psutil.wait_procs(alive, timeout=5)
    return {p.pid: None if p.returncode is None else int(p.returncode) for p in gone + gone_late}
