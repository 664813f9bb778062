"""Named file locks (.agents/locks/<name>.lock) for steps with side effects outside SQLite."""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentkit.state import StateError

LOCK_TIMEOUT_EXIT = 5


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
            LOCK_TIMEOUT_EXIT,
        ) from exc
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        lock.release()
