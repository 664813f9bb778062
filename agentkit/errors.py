"""Exit codes and the error every core function raises when a command cannot do what was asked."""

from agentkit.state import ExitCode, StateError, os_failure

__all__ = ["FAILURES", "AgentkitError", "ExitCode", "StateError", "conflict", "not_found", "not_utf8", "os_failure",
           "usage"]


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


def not_utf8(path, exc: UnicodeDecodeError, kind: str) -> AgentkitError:
    """A file that should be text is not UTF-8 (a Latin-1 file, a binary file): where, and what to do."""
    return usage(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
                 f"{kind} files are UTF-8: re-save it as UTF-8 (iconv -f LATIN1 -t UTF-8), or pass the right file")


# Everything a command reports as "error: … / hint: …" with its exit code: core's errors and the state layer's.
FAILURES = (AgentkitError, StateError)
