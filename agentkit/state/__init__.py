"""Where agentkit keeps its state: the SQLite store, named file locks and the .agents/ folder."""

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


class StateError(Exception):
    """State cannot be used as it is; `code` is the exit code a command should end with."""

    def __init__(self, message: str, hint: str | None = None, code: int = ExitCode.FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
