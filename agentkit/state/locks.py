"""Named file locks (.agents/locks/<name>.lock) for steps with side effects outside SQLite."""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentkit.state import ExitCode, StateError


@contextmanager
def named_lock(agents_dir: Path, name: str, timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock for a short step; raise StateError (exit 5) after `timeout` seconds."""
    import portalocker

    locks = agents_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{name}.lock"
    lock = portalocker.Lock(str(path), mode="a+", timeout=timeout, check_interval=0.01,
                            flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
    started = time.monotonic()
    try:
        fh = lock.acquire()
    except portalocker.exceptions.LockException as exc:
        holder = path.read_text().strip() if path.exists() else ""
        raise StateError(
            f"timed out after {time.monotonic() - started:.0f}s waiting for lock {path}"
            + (f" (held by pid {holder})" if holder else ""),
            "another agentkit command is running this step; retry, or check for a hung process",
            ExitCode.LOCK_TIMEOUT,
        ) from exc
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        lock.release()


class _Expired(Exception):
    pass


def _expire(signum, frame):
    raise _Expired


@contextmanager
def queued_lock(agents_dir: Path, name: str, timeout: float = 60.0) -> Iterator[None]:
    """An exclusive lock whose waiters sleep in the kernel (flock) and wake when it is released.

    SQLite's own busy handler retries with sleeps of up to 100 ms, so under contention the process that just
    committed tends to win again and others starve for seconds; queueing here first keeps waits short and fair.
    Raises StateError (exit 5) after `timeout` seconds."""
    import fcntl
    import signal
    import threading

    locks = agents_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGALRM, _expire)
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except _Expired:
                raise StateError(f"timed out after {timeout:g}s waiting for lock {locks / name}.lock",
                                 "another agentkit command holds it; retry, or check for a hung process",
                                 ExitCode.LOCK_TIMEOUT) from None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        else:  # signals only reach the main thread: poll instead
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StateError(f"timed out after {timeout:g}s waiting for lock {locks / name}.lock",
                                         None, ExitCode.LOCK_TIMEOUT) from None
                    time.sleep(0.001)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
