"""Named file locks (.agents/locks/<name>.lock) for steps with side effects outside SQLite.

One primitive, `flock(2)` on the lock file: waiters sleep in the kernel and wake when the holder releases it
(or dies: the kernel drops a dead process's locks), so waits are short and fair, and no lock outlives a crash.
The holder's pid is written into the file for the timeout message."""

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentkit.state import ExitCode, StateError, os_failure


class _Expired(Exception):
    pass


def _expire(signum, frame):
    raise _Expired


_in_process: dict[str, threading.Lock] = {}  # per lock file: this process's threads queue here, not on the flock
_in_process_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _in_process_guard:
        return _in_process.setdefault(str(path), threading.Lock())


def _acquire(fd: int, timeout: float) -> bool:
    """Take an exclusive flock on `fd` within `timeout` seconds."""
    import fcntl
    import signal

    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread: poll
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.002)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the common case, free: no timer to arm
        return True
    except BlockingIOError:
        pass
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except _Expired:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def holder(agents_dir: Path, name: str) -> str | None:
    """The pid last written into lock `name` (its holder's, while it is held), or None."""
    try:
        return (agents_dir / "locks" / f"{name}.lock").read_text().strip() or None
    except OSError:
        return None


@contextmanager
def named_lock(agents_dir: Path, name: str, timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock for a short step; raise StateError (exit 5) after `timeout` seconds."""
    locks = agents_dir / "locks"
    path = locks / f"{name}.lock"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if os.path.lexists(locks) and not os.path.isdir(locks):
            raise StateError(f"lock folder {locks} is a file, not a folder",
                             f"move it aside (mv {locks} {locks}.bak) and rerun") from exc
        raise os_failure(exc, f"lock file {path}") from exc
    mine = _thread_lock(path)  # another thread of this process holding it: wait in the kernel, not by polling
    started = time.monotonic()
    if not mine.acquire(timeout=timeout):
        os.close(fd)
        raise StateError(f"timed out after {timeout:.0f}s waiting for lock {path} (held by this process)",
                         "another agentkit command is running this step; retry, or check for a hung process",
                         ExitCode.LOCK_TIMEOUT)
    try:
        if not _acquire(fd, max(timeout - (time.monotonic() - started), 0.001)):
            held = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise StateError(
                f"timed out after {time.monotonic() - started:.0f}s waiting for lock {path}"
                + (f" (held by pid {held})" if held else ""),
                "another agentkit command is running this step; retry, or check for a hung process",
                ExitCode.LOCK_TIMEOUT,
            )
        try:
            os.pwrite(fd, f"{os.getpid():<10}\n".encode(), 0)  # fixed width: overwritten in place, never truncated
        except OSError as exc:  # a full disk
            raise os_failure(exc, f"lock file {path}") from exc
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
        mine.release()
