"""Where agentkit keeps its state: the SQLite store, named file locks and the .agents/ folder."""


class StateError(Exception):
    """State cannot be used as it is; `code` is the exit code a command should end with."""

    def __init__(self, message: str, hint: str | None = None, code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
