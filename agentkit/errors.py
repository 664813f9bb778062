"""Exit codes and the error every core function raises when a command cannot do what was asked."""

from agentkit.state import ExitCode, StateError

__all__ = ["FAILURES", "AgentkitError", "ExitCode", "StateError", "conflict", "not_found", "usage"]


class AgentkitError(Exception):
    """A failure with a cause a person can act on: `message` names it, `hint` names the next step."""

    def __init__(self, message: str, hint: str | None = None, code: int = ExitCode.FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = ExitCode(code)


def usage(message: str, hint: str | None = None) -> AgentkitError:
    return AgentkitError(message, hint, ExitCode.USAGE)


def not_found(message: str, hint: str | None = None) -> AgentkitError:
    return AgentkitError(message, hint, ExitCode.NOT_FOUND)


def conflict(message: str, hint: str | None = None) -> AgentkitError:
    return AgentkitError(message, hint, ExitCode.CONFLICT)


# Everything a command reports as "error: … / hint: …" with its exit code: core's errors and the state layer's.
FAILURES = (AgentkitError, StateError)
