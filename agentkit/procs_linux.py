"""The Linux process backend: start times from /proc, a child subreaper, and a cgroup v2 group per job."""

import itertools
import os
import signal
import time
from pathlib import Path

from agentkit.procs import Portable

PR_SET_CHILD_SUBREAPER = 36
GROUP_PREFIX = "agentkit-job-"
STALE_S = 600  # an empty job cgroup this old is a leftover
REAPED_WITHIN_S = 5  # how long removing a job's cgroup waits for its dead to be reaped


def _write(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError:
        return False


def _populated(group: str) -> bool:
    """Does the cgroup (or one below it) still hold a process, zombies included?"""
    try:
        return "populated 1" in Path(group, "cgroup.events").read_text()
    except OSError:
        return False


def _remove_stale(base: Path) -> None:
    """Remove job cgroups that have been empty for long: left when the dead of a job were not reaped in
    time for its end (a slow init), or by a supervisor killed between making one and recording it. A group
    is made just before its job's command starts, so an old empty one belongs to nobody."""
    for group in base.glob(f"{GROUP_PREFIX}*"):
        try:
            if time.time() - group.stat().st_mtime > STALE_S and not _populated(str(group)):
                group.rmdir()
        except OSError:
            continue


def _boot_time() -> float:
    with open("/proc/stat") as fh:
        return float(next(line.split()[1] for line in fh if line.startswith("btime")))


def _cgroup2() -> tuple[Path, list[str]] | None:
    """Where the cgroup v2 tree is mounted, and this process's cgroup in it as path parts."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        mine = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mount = next((line.split() for line in mounts if " - cgroup2 " in line), None)
    own = next((line[3:] for line in mine if line.startswith("0::")), None)
    if mount is None or own is None:
        return None
    root = mount[3].rstrip("/")  # the part of the tree this mount shows (not "/" for some bind mounts)
    if not (own + "/").startswith(root + "/"):
        return None
    return Path(mount[4]), [p for p in own[len(root):].split("/") if p]


class Linux(Portable):
    """/proc instead of psutil for identity (fast, and stable when the wall clock jumps: start times are
    ticks since boot); orphans re-parented to the supervisor; and, where this process may create cgroups
    under its own (cgroup v2 delegation, or root), a group per job that no setsid or double fork leaves."""

    name = "linux"

    def _stat(self, pid: int) -> list[bytes] | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            return None
        return stat[stat.rindex(b")") + 2:].split()  # the fields after the parenthesised name; [0] is the state

    def start_time(self, pid: int) -> float | None:
        fields = self._stat(pid)
        return float(fields[19]) if fields else None  # field 22: clock ticks after boot

    def same_start(self, now: float, recorded: float) -> bool:
        # a row written under AGENTKIT_PROCS=portable holds epoch seconds: compare in those too
        return now == recorded or abs(_boot_time() + now / os.sysconf("SC_CLK_TCK") - recorded) < 1e-3

    def is_zombie(self, pid: int) -> bool:
        fields = self._stat(pid)
        return bool(fields) and fields[0] in (b"Z", b"X")

    def cmdline(self, pid: int) -> bytes | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def become_subreaper(self) -> bool:
        import ctypes  # 3 ms that `worktree list`, which checks identities, need not pay

        try:
            return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            return False

    def new_group(self, label: str) -> str | None:
        """A cgroup beside this process's own (never inside another job's: a job that spawns jobs gets
        siblings), if this process may create one and move processes into it; None otherwise."""
        where = _cgroup2()
        if where is None:
            return None
        mount, own = where
        base = mount.joinpath(*itertools.takewhile(lambda part: not part.startswith(GROUP_PREFIX), own))
        _remove_stale(base)
        group = base / f"{GROUP_PREFIX}{label}-{os.urandom(4).hex()}"
        try:
            group.mkdir()
        except OSError:
            return None
        if not (os.access(base / "cgroup.procs", os.W_OK) and os.access(group / "cgroup.procs", os.W_OK)):
            group.rmdir()
            return None
        return str(group)

    def enter_group(self, group: str | None):
        if group is None:
            return None
        procs_file = os.path.join(group, "cgroup.procs")

        def enter() -> None:
            try:
                fd = os.open(procs_file, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)
            except OSError:
                pass  # it runs without the group: its token and session still mark it

        return enter

    def group_pids(self, group: str) -> set[int]:
        pids: set[int] = set()
        for folder, _dirs, _files in os.walk(group):
            try:
                pids.update(int(pid) for pid in Path(folder, "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return pids

    def clear_group(self, group: str, keep: set[int]) -> set[int]:
        base = Path(group).parent
        for pid in keep & self.group_pids(group):
            _write(base / "cgroup.procs", str(pid))
        # Kill until it can be removed, so what entered meanwhile dies too (the job's command between fork
        # and exec, still with its supervisor's environment, may be moving in: rmdir says busy while no
        # process is listed); the dead must be reaped first (a zombie still populates a cgroup), by init
        # for a dead supervisor's orphans: instant with systemd, seconds with some container inits.
        killed: set[int] = set()
        deadline = time.monotonic() + REAPED_WITHIN_S
        while True:
            left = self.group_pids(group) - keep
            if left - killed:
                killed |= left
                if not _write(Path(group) / "cgroup.kill", "1"):  # before Linux 5.14: one by one
                    for pid in left:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
            if (not _populated(group) and _remove(group)) or time.monotonic() >= deadline:
                return killed  # else an empty folder is left, harmless, removed later (_remove_stale)
            time.sleep(0.01)


def _remove(group: str) -> bool:
    """Remove a cgroup and any below it; False if one is still busy."""
    for folder, _dirs, _files in os.walk(group, topdown=False):
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return True


LINUX = Linux()
