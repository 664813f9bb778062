"""The detached supervisor of local jobs: owns the child, enforces the timeout, kills whole trees, records
the end, and runs the next queued job itself so a freed slot is reused at once.

Started as `python -m agentkit.builtin.local.supervisor ROOT JOB_ID` in a session of its own by the local
executor. It talks to core through the public functions of agentkit.jobs only."""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from agentkit import failpoints, jobs, procs
from agentkit.builtin import local
from agentkit.errors import AgentkitError
from agentkit.repo import Repo

HEARTBEAT_EVERY_S = 60


class Signals:
    """Signals turned into flags plus a wake-up of the select() in the wait loop (no polling)."""

    def __init__(self):
        self.rfd, wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        self.got: list[int] = []
        self.stop = False  # TERM, INT or HUP reached us: finish the current job's kill, then take no more
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        self.got.append(signum)
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.stop = True

    def wait(self, timeout: float | None) -> list[int]:
        if not self.got:
            select.select([self.rfd], [], [], timeout)
        try:
            while os.read(self.rfd, 512):
                pass
        except BlockingIOError:
            pass
        got, self.got = self.got, []
        return got


def _reap_zombies(main_pid: int | None) -> int | None:
    """Collect every exited child; return the main child's exit code if it was among them (negative: the
    signal that ended it, as subprocess reports it)."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == main_pid:
            code = os.waitstatus_to_exitcode(status)


def _heartbeat_every(repo: Repo, claim: dict | str) -> float:
    """Often enough that a claim (its row or id) never runs out of lease while its job runs: thrice per the
    claim's own lease (what a heartbeat renews it for), at most every 60 s."""
    from agentkit import claims

    return min(HEARTBEAT_EVERY_S, claims.lease_of(repo, claim) / 3)


def run(repo: Repo, job: dict, sig: Signals, subreaper: bool, on_exit=None) -> None:
    """Run one job that holds its slot: launch it, supervise it, record its end. Its cgroup (where the
    platform gives one) is removed when it is over."""
    me, me_started = os.getpid(), procs.start_time(os.getpid())
    jobs.checked_in(repo, job["job_id"], me, me_started)  # from here `reap` sees a live runner, even while we prepare
    failpoints.reach("supervisor:checked-in")
    tree = local.tree_of(repo, job)
    try:
        child = _launch(repo, job, tree, me, me_started)
        if child is not None:
            failpoints.reach("supervisor:started")
            _supervise(repo, jobs.get(repo, job["job_id"]), sig, child, tree, subreaper, on_exit)
    finally:
        tree.release()


def _launch(repo: Repo, job: dict, tree: procs.Tree, me: int, me_started: float | None):
    """Start the job's command in a session of its own (and in its cgroup); None if it ended before that."""
    job_id = job["job_id"]
    if job["worktree_auto"]:
        try:
            job = jobs.prepare_worktree(repo, job)
        except AgentkitError as exc:
            jobs.started(repo, job_id, None, None, me, me_started)
            jobs.finish(repo, job_id, "failed", reason=f"could not prepare its worktree: {exc.message}")
            return None
    if jobs.get(repo, job_id)["state"] != "running":  # killed or reaped while we prepared: do not start it
        return None
    if job["claim_id"]:  # renewed before the start; one that ran out while the job queued is someone else's now
        from agentkit import claims

        try:
            claims.heartbeat(repo, job["claim_id"])
        except AgentkitError as exc:
            jobs.started(repo, job_id, None, None, me, me_started)
            jobs.finish(repo, job_id, "failed", reason=f"not started: {exc.message}")
            return None
    env = jobs.job_env(repo, job)
    tree.group = procs.platform().new_group(str(job_id))
    if tree.group:  # recorded before anything can run in it, so `reap` finds it should we die
        jobs.checked_in(repo, job_id, me, me_started, handle={"cgroup": tree.group})
    log = open(job["log_path"], "ab", buffering=0)  # noqa: SIM115 - the child writes to it after we return
    try:
        child = subprocess.Popen(job["command"], cwd=job["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=procs.platform().enter_group(tree.group))
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        what = "command not found" if code == 127 else "command not executable"
        log.write(f"agentkit: {what}: {job['command'][0]} ({exc.strerror})\n".encode())
        log.close()
        jobs.started(repo, job_id, None, None, me, me_started)
        jobs.finish(repo, job_id, "failed", exit_code=code, reason=f"{what}: {job['command'][0]}")
        return None
    log.close()
    tree.leader, tree.leader_started = child.pid, procs.start_time(child.pid)
    jobs.started(repo, job_id, child.pid, tree.leader_started, me, me_started)
    return child


def _supervise(repo: Repo, job: dict, sig: Signals, child, tree: procs.Tree, subreaper: bool, on_exit=None) -> None:
    """Wait for the job's end, a kill request, its deadline or a signal; kill its tree if need be; record."""
    job_id = job["job_id"]
    if job["kill_requested_at"]:  # `jobs kill` came before we had a pid to signal
        sig.got.append(signal.SIGUSR1)
    deadline = time.monotonic() + job["timeout_s"] if job["timeout_s"] else None
    beat_every = _heartbeat_every(repo, job["claim_id"]) if job["claim_id"] else None
    next_beat = time.monotonic() if beat_every else None  # at once: what is left of the lease may be shorter
    ending, reason, code = None, None, None
    while code is None:
        now = time.monotonic()
        timeout = min([t - now for t in (deadline, next_beat) if t is not None] + [3600])
        got = sig.wait(max(timeout, 0))
        code = _reap_zombies(child.pid)
        if code is not None:
            break
        if deadline and time.monotonic() >= deadline and ending is None:
            ending, reason = "timed_out", f"timed out after {job['timeout_s']:g}s"
        elif signal.SIGUSR1 in got and ending is None and jobs.get(repo, job_id)["kill_requested_at"]:
            ending, reason = "killed", "killed by `agentkit jobs kill`"
        elif {signal.SIGTERM, signal.SIGINT, signal.SIGHUP} & set(got) and ending is None:
            ending, reason = "killed", f"its supervisor got {signal.Signals(got[-1]).name}"
        if ending is not None:
            grace = job["grace_s"]
            if ending == "killed" and signal.SIGUSR1 in got:
                grace = jobs.get(repo, job_id)["kill_grace_s"] or grace
            codes = tree.kill(grace, under=os.getpid())
            code = _reap_zombies(child.pid)
            if code is None:  # the kill's own wait reaped it
                code = codes.get(child.pid)
            if code is None:
                code = -signal.SIGKILL
            break
        if next_beat is not None and time.monotonic() >= next_beat:
            try:
                from agentkit import claims

                # `heartbeat --lease` by hand may have changed the claim's lease meanwhile: beat by the new one
                beat_every = _heartbeat_every(repo, claims.heartbeat(repo, job["claim_id"]))
            except AgentkitError:
                pass
            next_beat = time.monotonic() + beat_every
    # after a normal exit, leftovers are in the job's session or cgroup, or (as we are their subreaper) below
    # us: no machine-wide scan unless the platform re-parents orphans elsewhere
    if on_exit is not None:  # before the end is recorded: whoever sees the slot free finds us ready
        on_exit()
    leftovers = len(tree.kill(min(job["grace_s"], 2.0), under=os.getpid(),
                              everywhere=ending is not None or not subreaper))
    exit_code, signum = (code, None) if code >= 0 else (None, -code)
    if ending is None:
        ending = "succeeded" if code == 0 else "failed"
        reason = None if code == 0 else (f"exited with {code}" if code > 0 else f"killed by signal {signum}")
    if leftovers:
        reason = (reason + "; " if reason else "") + f"{leftovers} leftover process(es) killed"
    failpoints.reach("supervisor:ending")
    jobs.finish(repo, job_id, ending, exit_code=exit_code, signal=signum, reason=reason)


def main(argv: list[str]) -> int:
    """`ROOT JOB_ID`: run that job, then the next ones; `ROOT --idle EXECUTOR`: start idle, as if it had just
    ended a job, for a submit to hand one over (local.LocalExecutor.warm)."""
    root = argv[0]
    subreaper = procs.platform().become_subreaper()
    sig = Signals()
    repo = Repo(Path(root))
    if argv[1] == "--idle":
        executor = argv[2]
        idle = Idle(repo, executor)
        job = idle.linger(sig)
    else:
        job = jobs.get(repo, int(argv[1]))
        executor = job["executor"]  # the name it was registered under: it runs the queued jobs of that name
        idle = Idle(repo, executor)
    while job is not None:
        if job["state"] == "running" and job["supervisor_pid"] is None:  # ours: dispatched, nobody checked in
            try:
                run(repo, job, sig, subreaper, on_exit=idle.announce if not sig.stop else None)
            except Exception as exc:  # noqa: BLE001 - record it on the job rather than lose it in a log
                local.tree_of(repo, jobs.get(repo, job["job_id"])).kill(1)
                jobs.finish(repo, job["job_id"], "failed", reason=f"supervisor error: {exc!r}")
        job = idle.handed()
        if job is None and not sig.stop:
            job = jobs.dispatch(repo, adopt=lambda queued: queued["executor"] == executor)
            if job is not None:
                idle.leave(next_job=job)  # a job handed over meanwhile gets a supervisor of its own
            else:
                job = idle.linger(sig)
    idle.leave()
    repo.close()
    return 0


class Idle:
    """This supervisor offered as idle (`idle/<pid>`), so a submit can hand it the next job (local.hand_over)
    instead of starting a new Python process. Offered as soon as its job's command has exited, before the end
    is recorded, so the submit that the freed slot lets in finds it."""

    def __init__(self, repo: Repo, executor: str):
        from agentkit import durations

        self.repo, self.executor = repo, executor
        raw = repo.config["jobs.linger"]
        self.linger_s = durations.parse(raw, "jobs.linger") if raw else 0
        self.me = str(os.getpid())
        self.offered = False
        self.idle, self.taken = local.idle_dir(repo, executor) if self.linger_s > 0 else (None, None)

    def announce(self) -> None:
        if self.idle is not None and not self.offered:  # its start time inside, so a recycled pid is never used
            temp = self.idle.parent / f".{self.me}.tmp"
            temp.write_text(repr(procs.start_time(os.getpid())))
            os.rename(temp, self.idle / self.me)
            self.offered = True

    def handed(self) -> dict | None:
        """The job a submit handed us (our idle file renamed away), if any."""
        if not self.offered or (self.idle / self.me).exists():
            return None
        self.offered = False
        found = next(iter(self.taken.glob(f"{self.me}.*")), None)
        if found is None:
            return None
        found.unlink(missing_ok=True)
        job = jobs.get(self.repo, int(found.name.split(".")[1]))
        return job if job["state"] == "running" and job["supervisor_pid"] is None else None

    def _withdraw(self) -> bool:
        """Take the offer back: True if done, False if a job was handed over first (then `handed` has it)."""
        try:
            (self.idle / self.me).unlink()
        except FileNotFoundError:
            return False
        self.offered = False
        return True

    def leave(self, next_job: dict | None = None) -> None:
        """No longer idle; a job handed over in the meantime is started by a supervisor of its own."""
        if self.offered and not self._withdraw():
            late = self.handed()
            if late is not None:
                local.start_supervisor(self.repo, late)

    def linger(self, sig: Signals) -> dict | None:
        """Wait up to jobs.linger for a job to be handed over; None when none came."""
        if self.idle is None:
            return None
        self.announce()
        deadline = time.monotonic() + self.linger_s
        while not sig.stop and time.monotonic() < deadline and (self.idle / self.me).exists():
            sig.wait(deadline - time.monotonic())
        if self._withdraw():
            return None
        return self.handed()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
