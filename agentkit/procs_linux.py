"""The Linux process backend: start times from /proc, a child subreaper, and a cgroup v2 group per job."""

import itertools
import os
import time
from pathlib import Path

from agentkit.procs import Portable

PR_SET_CHILD_SUBREAPER = 36
GROUP_PREFIX = "agentkit-job-"


def _write(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError:
        return False


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
        left = self.group_pids(group) - keep
        if left and _write(Path(group) / "cgroup.kill", "1"):  # Linux 5.14+; before, the sweeps must do
            deadline = time.monotonic() + 2
            while self.group_pids(group) and time.monotonic() < deadline:
                time.sleep(0.01)
        for folder, _dirs, _files in os.walk(group, topdown=False):
            try:
                os.rmdir(folder)
            except OSError:
                pass  # still populated (a process stuck in uninterruptible sleep): left for the system
        return left


LINUX = Linux()
