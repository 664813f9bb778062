"""Process identity, a job's tree and its kill, with real processes, against both backends (Linux's and the
portable one macOS and Windows use, forced here with AGENTKIT_PROCS=portable)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agentkit import procs, procs_linux
from agentkit.errors import AgentkitError, ExitCode
from tests.conftest import wait_until

BACKENDS = procs.BACKENDS if sys.platform.startswith("linux") else ("portable",)


def backend_fixture():
    """A `backend` fixture for a test module: each test that takes it runs under each process backend, and
    every agentkit process it starts (supervisors, the CLI) inherits the choice through AGENTKIT_PROCS."""

    @pytest.fixture(params=BACKENDS)
    def backend(request, monkeypatch):
        monkeypatch.setenv("AGENTKIT_PROCS", request.param)
        assert procs.platform().name == request.param
        return procs.platform()

    return backend


backend = backend_fixture()


def cgroups_here() -> bool:
    """Can this process make a cgroup for a job (so the Linux backend contains jobs in one)?"""
    if not sys.platform.startswith("linux"):
        return False
    probe = procs_linux.LINUX.new_group("probe")
    if probe is not None:
        os.rmdir(probe)
    return probe is not None


ROLES = ("main", "wiped", "setsid", "wiped_setsid", "daemon", "nobodys", "others")


def marker() -> str:
    """A `sleep` duration no other process on this shared machine uses, so its processes can be found."""
    return str(random.randint(10 ** 6, 10 ** 7))


def sleep(mark: str, role: str) -> str:
    return f"sleep {mark}.{ROLES.index(role) + 1}"


def sleeping(mark: str) -> dict[str, psutil.Process]:
    """Live `sleep <mark>.N` processes, by the role that N stands for."""
    found = {}
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if len(cmd) == 2 and cmd[0].endswith("sleep") and cmd[1].startswith(mark + ".") \
                and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found[ROLES[int(cmd[1].rsplit(".", 1)[1]) - 1]] = proc
    return found


def kill_all(found) -> None:
    for proc in found:
        try:
            proc.kill()
        except psutil.Error:
            pass


def test_identity_is_pid_and_start_time(backend):
    child = subprocess.Popen(["sleep", "30"])
    started = procs.start_time(child.pid)
    assert started is not None and procs.alive(child.pid, started)
    wait_until(lambda: procs.alive(child.pid, started, b"sleep"))  # its command line is set late in exec
    assert not procs.alive(child.pid, started, b"redis-server")
    assert not procs.alive(child.pid, started + 1), "the same pid with another start time is another process"
    assert not procs.alive(child.pid, None) and not procs.alive(None, started)
    child.kill()
    wait_until(lambda: not procs.alive(child.pid, started))  # a zombie (not reaped yet) is not alive
    assert procs.start_time(child.pid) is not None, "still a zombie here"
    child.wait()
    assert procs.start_time(child.pid) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="two backends only on Linux")
def test_a_start_time_recorded_under_the_portable_backend_is_understood_by_linuxs(monkeypatch):
    child = subprocess.Popen(["sleep", "30"])
    try:
        monkeypatch.setenv("AGENTKIT_PROCS", "portable")
        recorded = procs.start_time(child.pid)
        monkeypatch.setenv("AGENTKIT_PROCS", "linux")
        assert procs.start_time(child.pid) != recorded, "the units differ: ticks since boot, epoch seconds"
        assert procs.alive(child.pid, recorded) and not procs.alive(child.pid, recorded - 0.5)
    finally:
        child.kill()
        child.wait()


def test_an_unknown_backend_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("AGENTKIT_PROCS", "bsd")
    with pytest.raises(AgentkitError) as exc:
        procs.platform()
    assert exc.value.code == ExitCode.USAGE and "AGENTKIT_PROCS='bsd'" in exc.value.message


def test_terminate_escalates_to_kill_after_the_grace(backend):
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                                 "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    polite = subprocess.Popen(["sleep", "60"])
    assert stubborn.stdout.readline() == "ready\n"
    codes = procs.terminate([psutil.Process(stubborn.pid), psutil.Process(polite.pid)], grace=0.5)
    assert codes == {stubborn.pid: -signal.SIGKILL, polite.pid: -signal.SIGTERM}
    assert procs.start_time(stubborn.pid) is None and procs.start_time(polite.pid) is None, "gone and reaped"


def test_terminate_signals_parents_first_so_a_shell_ends_by_the_kill_not_by_its_childs(backend, monkeypatch):
    """A shell whose foreground child dies exits at once with 128 + the child's signal: had the child got its
    KILL first, the shell (a job's usual main process) would end with exit code 137 instead of by SIGKILL.
    A pause after each signal, as when the killer is preempted on a busy machine, gives it all the time."""
    mark = marker()
    shell = subprocess.Popen(["sh", "-c", f"trap '' TERM; {sleep(mark, 'main')}"])
    child = wait_until(lambda: sleeping(mark).get("main"))
    sent, send = [], os.kill

    def slow_kill(pid, sig):
        send(pid, sig)
        if sig:  # 0 is psutil asking whether a pid exists
            sent.append((pid, sig))
            time.sleep(0.2)

    monkeypatch.setattr(os, "kill", slow_kill)
    codes = procs.terminate([child, psutil.Process(shell.pid)], grace=0.3)
    monkeypatch.undo()
    term, kill = signal.SIGTERM, signal.SIGKILL
    assert sent == [(shell.pid, term), (child.pid, term), (shell.pid, kill), (child.pid, kill)]
    assert codes[shell.pid] == -signal.SIGKILL


def spawn_tree(backend, token: str, mark: str) -> tuple[subprocess.Popen, str | None]:
    """A job-like tree in a session of its own: its processes carry the token, or wiped it, or left the
    session, or both, beside processes marked as no job's and as another job's."""
    group = backend.new_group("test")
    script = (f"env -i {sleep(mark, 'wiped')} & "                  # no token, still in the session
              f"setsid {sleep(mark, 'setsid')} & "                  # token, in a session of its own
              f"env -i setsid {sleep(mark, 'wiped_setsid')} & "     # both, but its parent lives: a descendant
              f"(env -i setsid {sleep(mark, 'daemon')} &); "        # both, and double-forked: the cgroup only
              f"AGENTKIT_JOB_TOKEN= {sleep(mark, 'nobodys')} & "    # marked as nobody's job (a nested supervisor)
              f"AGENTKIT_JOB_TOKEN=other {sleep(mark, 'others')} & "  # another job's
              f"{sleep(mark, 'main')}")
    leader = subprocess.Popen(["sh", "-c", script], env={**os.environ, "AGENTKIT_JOB_TOKEN": token},
                              start_new_session=True, preexec_fn=backend.enter_group(group))
    wait_until(lambda: len(sleeping(mark)) == 7)
    return leader, group


def test_a_tree_is_found_by_token_session_descent_and_cgroup(backend):
    mark = marker()
    leader, group = spawn_tree(backend, "t0k3n", mark)
    everything = sleeping(mark)
    try:
        tree = procs.Tree("t0k3n", leader.pid, procs.start_time(leader.pid), group)
        found = {p.pid for p in tree.processes()}
        ours = {"wiped", "setsid", "wiped_setsid", "main"} | ({"daemon"} if group else set())
        assert {n for n, p in everything.items() if p.pid in found} == ours
        assert leader.pid in found
        codes = tree.kill(0.5)
        assert codes[leader.pid] == -signal.SIGTERM and found <= set(codes)
        left = set(sleeping(mark))
        assert left == {"nobodys", "others"} | ({"daemon"} if not group else set()), \
            "a double-forked setsid daemon that wiped its token escapes without a cgroup (docs/jobs.md)"
        if group:
            assert not Path(group).exists(), "the cgroup is removed with the job"
    finally:
        kill_all(everything.values())
        if group:
            procs.Tree("t0k3n", group=group).release()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_a_cgroup_keeps_what_must_outlive_the_job(monkeypatch):
    """A process marked as nobody's job (a supervisor the job started) is moved out of the cgroup, not killed."""
    monkeypatch.setenv("AGENTKIT_PROCS", "linux")
    backend = procs.platform()
    mark = marker()
    leader, group = spawn_tree(backend, "t0k3n", mark)
    everything = sleeping(mark)
    try:
        if group is None:
            pytest.skip("no writable cgroup v2 here: a job's processes are marked by token and session only")
        nobodys = everything["nobodys"].pid
        assert nobodys in backend.group_pids(group)
        procs.Tree("t0k3n", leader.pid, procs.start_time(leader.pid), group).kill(0.5)
        assert set(sleeping(mark)) == {"nobodys", "others"} and not Path(group).exists()
    finally:
        kill_all(everything.values())


def test_a_recycled_leader_pid_lends_no_session(backend):
    mark = marker()
    stranger = subprocess.Popen(["sh", "-c", f"{sleep(mark, 'main')} & {sleep(mark, 'wiped')}"],
                                env={"PATH": os.environ["PATH"]}, start_new_session=True)
    wait_until(lambda: len(sleeping(mark)) == 2)
    try:
        started = procs.start_time(stranger.pid)
        assert len(procs.Tree("t", stranger.pid, started).processes()) == 3, "its own session, no token"
        recycled = procs.Tree("t", stranger.pid, started + 1)  # a job whose leader had this pid long ago
        assert recycled.processes() == [] and recycled.kill(0.1) == {}
        assert len(sleeping(mark)) == 2 and stranger.poll() is None
    finally:
        kill_all(sleeping(mark).values())
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_cgroups_are_used_only_where_this_process_may_make_them(monkeypatch, tmp_path):
    linux = procs_linux.LINUX
    where = procs_linux._cgroup2()
    made = linux.new_group("probe")
    if made is not None:  # root, or a delegated cgroup v2 subtree (systemd Delegate=yes)
        assert where is not None and Path(made).parent == where[0].joinpath(*where[1])
        assert (Path(made) / "cgroup.procs").is_file()
        long_ago = time.time() - procs_linux.STALE_S - 1
        os.utime(made, (long_ago, long_ago))  # as if left empty by a job long over
        fresh = linux.new_group("probe")
        assert not Path(made).exists(), "an old empty job cgroup is removed when the next is made"
        assert linux.clear_group(fresh, set()) == set() and not Path(fresh).exists()
    # a tree we may not write (here: a plain folder standing for a cgroup2 mount): no group, nothing left
    (tmp_path / "cgroup").mkdir()
    monkeypatch.setattr(procs_linux, "_cgroup2", lambda: (tmp_path / "cgroup", []))
    assert linux.new_group("probe") is None and list((tmp_path / "cgroup").iterdir()) == []
    assert procs._PORTABLE.new_group("probe") is None and procs._PORTABLE.enter_group(None) is None
