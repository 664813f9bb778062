"""Rendering for every command: data to stdout (a table, or JSON with --json), messages to stderr."""

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import typer

from agentkit.errors import FAILURES, AgentkitError, ExitCode


def say(message: str) -> None:
    """A message for people: stderr, so stdout stays data."""
    print(message, file=sys.stderr, flush=True)


def wants_json(argv: list[str]) -> bool:
    """Is --json one of agentkit's own arguments (not one of a command given after `--`, as in
    `spawn -- tool --json`)? For failures met before a command parses its options."""
    return "--json" in (argv[:argv.index("--")] if "--" in argv else argv)


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(rows: Sequence[dict], columns: Sequence[str], title: str | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 240, highlight=False)
    tbl = Table(*columns, box=box.SIMPLE_HEAD, title=title, title_justify="left")
    for row in rows:
        tbl.add_row(*("" if row.get(c) is None else _cell(row.get(c)) for c in columns))
    console.print(tbl)


def _cell(value) -> str:
    if isinstance(value, list):
        if len(value) > 2 and all(isinstance(v, int) for v in value) and \
                value == list(range(value[0], value[0] + len(value))):
            return f"{value[0]}-{value[-1]}"
        return ", ".join(map(str, value))
    return str(value)


def pairs(data: dict, keys: Sequence[str] | None = None) -> None:
    """A key/value block for one object."""
    keys = keys or [k for k, v in data.items() if not isinstance(v, (dict, list)) or k == "ports"]
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = data.get(key)
        print(f"{key:<{width}}  {'' if value is None else _cell(value)}")


def _debug() -> bool:
    import os

    return os.environ.get("AGENTKIT_DEBUG") not in (None, "", "0")


def emit_error(code: int, message: str, hint: str | None) -> None:
    """The JSON error object (docs/exit-codes.md) on stdout."""
    emit_json({"error": {"code": code, "name": ExitCode(code).name.lower(), "message": message, "hint": hint}})


def fail(exc, as_json: bool):
    """Report an AgentkitError or StateError (message and hint on stderr, the JSON error with --json) and exit
    with its code."""
    code = int(exc.code)
    if as_json:
        emit_error(code, exc.message, exc.hint)
    say(f"error: {exc.message}")
    if exc.hint:
        say(f"hint: {exc.hint}")
    raise typer.Exit(code) from None


def explain(exc: Exception):
    """A failure from outside agentkit's own checks (the OS, SQLite, a file's encoding, a huge number) as an
    error naming its cause and the fix; None when nothing explains it: then it is a bug."""
    if isinstance(exc, OverflowError):  # an id or number past SQLite's 64-bit integers
        return AgentkitError(f"a number is too large: {exc}", "ids, fences and priorities are 64-bit integers",
                             ExitCode.USAGE)
    sqlite3 = sys.modules.get("sqlite3")  # loaded if the failure could be one of its errors
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        from agentkit.state.store import explain as explain_db

        return explain_db(exc)
    if isinstance(exc, OSError):
        from agentkit.state import os_failure

        return os_failure(exc)
    if isinstance(exc, UnicodeDecodeError):
        return AgentkitError(f"a file agentkit read is not UTF-8 text ({exc})",
                             "rerun with AGENTKIT_DEBUG=1 to see which file, then re-save it as UTF-8 or move it aside")
    return None


@contextmanager
def handled(as_json: bool) -> Iterator[None]:
    """Turn a failure into its message on stderr, a JSON error on stdout (with --json) and its exit code. Core's
    own errors keep theirs; the OS's, SQLite's and decoding errors are explained; anything else is an internal
    error, with the traceback behind AGENTKIT_DEBUG=1."""
    try:
        yield
    except FAILURES as exc:
        fail(exc, as_json)
    except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
        raise  # the CLI's own flow: exits, usage errors
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure still reaches the user as an error, not a traceback
        if _debug():
            raise
        fail(explain(exc) or AgentkitError(
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in agentkit or one of its plugins: rerun with AGENTKIT_DEBUG=1 to see where, and report "
            "that traceback to agentkit's issue tracker (or the plugin's, when it ends in a plugin)"), as_json)


def render(data, as_json: bool, human: Callable[[object], None]) -> None:
    if as_json:
        emit_json(data)
    else:
        human(data)


def band_note(change: dict | None) -> None:
    if change:
        verb = "grew" if change["to"] > change["from"] else "shrank"
        say(f"band {verb} {change['from']} → {change['to']} slots ({change.get('reason', '')}); no restart")


def open_repo(**overrides):
    """The Repo for the current directory (after -C), with flag overrides as config values."""
    from agentkit.repo import Repo

    return Repo(overrides=overrides or None)


JSON_OPT = typer.Option(False, "--json", help="Print JSON (objects carry schema_version) instead of a table.")
