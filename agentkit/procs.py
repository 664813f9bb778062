"""Processes of jobs: identity as (pid, start time), a job's whole tree, and stopping it, behind one platform.

`platform()` is the one interface that differs by system. The portable one (macOS, Windows, and Linux with
`AGENTKIT_PROCS=portable`) knows sessions, process groups and psutil's process tree; the Linux one
(agentkit/procs_linux.py) adds a child subreaper, start times read from /proc and a per-job cgroup when the
cgroup v2 tree is writable. Everything else here is written once, against that interface."""

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

NO_JOB = {"AGENTKIT_JOB_ID": "", "AGENTKIT_JOB_TOKEN": ""}  # the environment mark of "belongs to no job"
BACKENDS = ("linux", "portable")


class Portable:
    """What psutil offers on every system: create times, zombies, command lines. No subreaper, no cgroups:
    a job's orphans are found by token, session and process group only."""

    name = "portable"

    def start_time(self, pid: int) -> float | None:
        import psutil

        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return None

    def same_start(self, now: float, recorded: float) -> bool:
        return abs(now - recorded) < 1e-3

    def is_zombie(self, pid: int) -> bool:
        import psutil

        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def cmdline(self, pid: int) -> bytes | None:
        import psutil

        try:
            return "\0".join(psutil.Process(pid).cmdline()).encode()
        except psutil.Error:
            return None

    def become_subreaper(self) -> bool:
        """Have orphaned descendants re-parented to this process. Returns whether that is in effect."""
        return False

    def new_group(self, token: str) -> str | None:
        """A container for one job's processes that they cannot leave (a cgroup), or None."""
        return None

    def enter_group(self, group: str | None) -> Callable[[], None] | None:
        """A `preexec_fn` that puts the new process into `group` before it runs anything, or None."""
        return None

    def group_pids(self, group: str) -> set[int]:
        return set()

    def clear_group(self, group: str, keep: set[int]) -> set[int]:
        """Move `keep` out of the group, kill what else is in it, remove it. Returns the pids it killed."""
        return set()


_PORTABLE = Portable()


def platform() -> Portable:
    """The process backend: AGENTKIT_PROCS=portable|linux forces one; by default Linux's on Linux."""
    choice = os.environ.get("AGENTKIT_PROCS", "")
    if choice not in ("", *BACKENDS):
        from agentkit.errors import usage

        raise usage(f"AGENTKIT_PROCS={choice!r} is not a process backend", f"choose one of: {', '.join(BACKENDS)}")
    if choice == "portable" or not sys.platform.startswith("linux"):
        return _PORTABLE
    from agentkit.procs_linux import LINUX

    return LINUX


def start_time(pid: int) -> float | None:
    """When `pid` started, in the backend's unit (clock ticks since boot on Linux; epoch seconds elsewhere)."""
    return platform().start_time(pid)


def alive(pid: int | None, started: float | None, cmdline_has: bytes | None = None) -> bool:
    """True if the process that had `pid` when it started at `started` still runs (and is not a zombie).

    Start times tick every 10 ms on Linux; `cmdline_has` adds a check of what the process is, for callers
    about to signal it."""
    if not pid or started is None:
        return False
    plat = platform()
    now = plat.start_time(pid)
    if now is None or not plat.same_start(now, started):
        return False
    if cmdline_has is not None and cmdline_has not in (plat.cmdline(pid) or b""):
        return False
    return not plat.is_zombie(pid)


def exists(pid: int) -> bool:
    """Some process has `pid` (signal 0; one of another user's counts), whatever it is: for a pid recorded in a
    file, where no start time was kept to tell a reused pid apart (`alive` does that)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _live(procs) -> list:
    import psutil

    out = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def with_token(token: str) -> list:
    """Every live process whose environment carries this job's token, wherever it was re-parented."""
    import psutil

    return _live(p for p in psutil.process_iter() if job_token(p) == token)


def _in_session(pid: int, leader: int) -> bool:
    """Is `pid` in the session (or, where sessions cannot be read, the process group) that `leader` made?"""
    for ask in (getattr(os, "getsid", None), getattr(os, "getpgid", None)):
        if ask is not None:
            try:
                return ask(pid) == leader
            except OSError:
                continue
    return False


@dataclass
class Tree:
    """One job's processes, found by every mark the platform has: the job's token in their environment, the
    session and process group its main process (the leader) made, its cgroup, and descendants of any of
    those (or of `under`, the job's supervisor) that dropped the token. Not the job's: a process marked with
    another job's token or with none (NO_JOB: agentkit's own supervisors and servers), nor `spare()`."""

    token: str
    leader: int | None = None
    leader_started: float | None = None
    group: str | None = None
    spare: Callable[[], set] = set

    def _session(self) -> int | None:
        """The leader's session id, unless the leader's pid now names another process (then the session,
        emptied and recycled, is someone else's)."""
        if not self.leader:
            return None
        plat = platform()
        now = plat.start_time(self.leader)
        if now is not None and (self.leader_started is None or not plat.same_start(now, self.leader_started)):
            return None
        return self.leader

    def processes(self, under: int | None = None, everywhere: bool = True) -> list:
        """The job's live processes. Without `everywhere`, only those in its cgroup or below `under` (the job's
        subreaper, which every orphan of the job is re-parented to), or with no `under` in its session or
        cgroup, are looked at: that spares reading every process on the machine."""
        import psutil

        spared = self.spare() | {os.getpid()}
        in_group = platform().group_pids(self.group) if self.group else set()
        session = self._session()

        def ours(proc, marked: bool) -> bool:
            token = job_token(proc)
            return token == self.token or (token is None and marked)

        found = {}
        if everywhere or under is None:
            for proc in psutil.process_iter():
                if proc.pid in spared:
                    continue
                marked = proc.pid in in_group or (session is not None and _in_session(proc.pid, session))
                if (marked or everywhere) and ours(proc, marked):
                    found[proc.pid] = proc
        else:  # `under` is the job's subreaper: what its session left is below it, or in its cgroup
            for pid in in_group - spared:
                try:
                    proc = psutil.Process(pid)
                except psutil.Error:
                    continue
                if ours(proc, True):
                    found[pid] = proc
        queue = list(found.values())
        if under is not None:
            try:
                queue.append(psutil.Process(under))
            except psutil.Error:
                pass
        while queue:  # descendants that wiped their environment; not through anything spared or foreign
            try:
                children = queue.pop().children()
            except psutil.Error:
                continue
            for child in children:
                if child.pid not in found and child.pid not in spared and ours(child, True):
                    found[child.pid] = child
                    queue.append(child)
        return _live(found.values())

    def kill(self, grace: float, under: int | None = None, everywhere: bool = True) -> dict[int, int | None]:
        """TERM → grace → KILL, swept until nothing is left (a tree can fork while it is being killed), then
        the cgroup is emptied and removed. Returns the exit codes seen by pid (see `terminate`)."""
        codes: dict[int, int | None] = {}
        for _ in range(5):
            found = self.processes(under, everywhere)
            if not found:
                break
            codes.update(terminate(found, grace))
            grace = min(grace, 1.0)
        codes.update(dict.fromkeys(self.release() - codes.keys()))
        return codes

    def release(self) -> set[int]:
        """Remove the job's cgroup: what must outlive the job (a nested supervisor, a server) is moved out,
        anything else still in it is killed. Returns the pids killed."""
        if not self.group:
            return set()
        import psutil

        keep = set(self.spare())
        for pid in platform().group_pids(self.group):
            try:
                if job_token(psutil.Process(pid)) not in (None, self.token):
                    keep.add(pid)
            except psutil.Error:
                continue
        return platform().clear_group(self.group, keep)


def terminate(processes: list, grace: float) -> dict[int, int | None]:
    """TERM every process, wait up to `grace` seconds, KILL the survivors. Returns each pid's exit code as
    far as it is known (negative: the signal that ended it), which matters for our own children, whom the
    wait reaps.

    Parents are signalled before their children, for TERM and for KILL: a process that outlived its child
    by even a moment would see it die and could act on it; a shell, the usual main process of a job, exits
    on its own with 128 + the child's signal, and the job would read as ending with that exit code rather
    than by our signal.

    psutil checks each process's identity (pid + create time) before signalling, so a pid that was recycled
    since the list was made is never signalled."""
    import psutil

    signalled = []
    for proc in parents_first(processes):
        try:
            proc.terminate()
            signalled.append(proc)
        except psutil.NoSuchProcess:
            signalled.append(proc)  # gone already: the wait records its exit
        except psutil.Error:
            pass  # not ours to signal (another user's, e.g. under sudo): waiting for it would only stall
    if not signalled:
        return {}
    gone, alive = _wait(signalled, grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    gone_late, _ = _wait(alive, 5)
    codes = {p.pid: getattr(p, "returncode", None) for p in gone + gone_late}
    return {pid: None if code is None else int(code) for pid, code in codes.items()}


def _wait(processes: list, timeout: float) -> tuple[list, list]:
    """Wait up to `timeout` for the processes to end; (gone, alive), `alive` in the order given. A zombie
    counts as gone: it is dead, and an orphan's new parent (init, a subreaper) may take its time to reap it.
    Our own children are reaped here, which records their exit codes."""
    import psutil

    deadline = time.monotonic() + timeout
    alive, gone = list(processes), []
    while True:
        dead = {p.pid for p in alive if _dead(p)}  # before the wait, which reaps (and so records) our own
        done, _ = psutil.wait_procs(alive, timeout=0)  # its lists come out of sets, in no order
        reaped = {p.pid for p in done}
        gone += done + [p for p in alive if p.pid in dead - reaped]
        alive = [p for p in alive if p.pid not in dead | reaped]  # in the order given: the order of the KILLs
        if not alive or time.monotonic() >= deadline:
            return gone, alive
        time.sleep(0.02)


def parents_first(processes: list) -> list:
    """The processes ordered so that each comes after its parent and every other ancestor among them."""
    import psutil

    parent = {}
    for proc in processes:
        try:
            parent[proc.pid] = proc.ppid()
        except psutil.Error:
            parent[proc.pid] = None

    def depth(pid: int) -> int:
        seen = {pid}
        while (pid := parent[pid]) in parent and pid not in seen:
            seen.add(pid)
        return len(seen)

    return sorted(processes, key=lambda proc: depth(proc.pid))


def _dead(proc) -> bool:
    import psutil

    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
