"""Where agentkit keeps its state: the SQLite store, named file locks and the .agents/ folder."""

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """Stable exit codes: scripts branch on these (documented in docs/exit-codes.md). Defined here, the lowest
    layer, so state's own errors use them too; agentkit.errors exports them for everyone else."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CAPACITY = 3
    NOTHING_READY = 4
    LOCK_TIMEOUT = 5
    NOT_FOUND = 6
    CONFLICT = 7
    QUEUE_FULL = 8
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM (`agentkit run`: its agents killed, their claims released)


class StateError(Exception):
    """State cannot be used as it is; `code` is the exit code a command should end with."""

    def __init__(self, message: str, hint: str | None = None, code: int = ExitCode.FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


# What a person can do about an OSError, by errno; the message itself names the path and the cause.
_OS_HINTS = {
    errno.EACCES: "this user may not use it: fix its permissions (ls -ld {path}) or run as the user who owns it",
    errno.EPERM: "the system refuses it (immutable? see lsattr {path}): fix that, or move it aside",
    errno.EROFS: "it is on a read-only filesystem: put agentkit's state elsewhere with AGENTKIT_HOME=/writable/dir",
    errno.ENOSPC: "the disk is full: free some space and rerun",
    errno.EDQUOT: "the disk quota is used up: free some space and rerun",
    errno.ENOTDIR: "a part of that path is a file where a folder is expected: move that file aside",
    errno.EISDIR: "that path is a folder where a file is expected: move the folder aside",
    errno.EEXIST: "something else is already there: move it aside",
    errno.ENOENT: "it does not exist, or it is on a filesystem that cannot hold agentkit's files (such as /proc)",
}


def os_failure(exc: OSError, what: str | None = None, code: int = ExitCode.FAILED) -> StateError:
    """An OSError as an error a person can act on: the path (or `what`), the system's cause, and a next step."""
    path = exc.filename
    subject = what or (None if path is None else str(path) if exc.filename2 is None
                       else f"{path} -> {exc.filename2}")
    cause = exc.strerror or str(exc) or type(exc).__name__
    if subject is None:
        return StateError(f"{type(exc).__name__}: {cause}", "rerun with AGENTKIT_DEBUG=1 to see where it happened",
                          code)
    return StateError(f"cannot use {subject}: {cause}",
                      _OS_HINTS.get(exc.errno, "check that path and rerun").format(path=path or subject), code)
