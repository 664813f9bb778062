"""The command line: typer apps that parse, call one core function and render.

The built-in commands live in the sub-modules (tasks, jobs, worktree, ...) and are loaded lazily: the root group
knows each one's name, module and attribute, and imports the module and builds the click command only when that
command is looked up (running it, or `--help` and the reference, which look up all of them). A cold start of
one command thus pays for that command's module alone, not for every module and all ~45 click commands.
"""

import os
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path

import typer
from typer.core import TyperGroup

# The built-in commands and sub-apps as (name, module, attribute), in the order `--help` lists them (typer lists a
# group's commands before its sub-groups, each in registration order). A new built-in command gets a row here
# rather than an `app.command(...)` call, so that importing this module stays cheap.
COMMANDS = (
    ("claim", "agentkit.cli.tasks", "claim"),
    ("heartbeat", "agentkit.cli.tasks", "heartbeat"),
    ("release", "agentkit.cli.tasks", "release"),
    ("reap", "agentkit.cli.jobs", "reap"),
    ("spawn", "agentkit.cli.jobs", "spawn"),
    ("health", "agentkit.cli.jobs", "health"),
    ("snapshot", "agentkit.cli.info", "snapshot"),
    ("doctor", "agentkit.cli.doctor", "doctor"),
    ("plugins", "agentkit.cli.info", "plugins"),
    ("events", "agentkit.cli.info", "events"),
    ("version", "agentkit.cli.info", "version"),
    ("install-docs", "agentkit.cli.docs", "install_docs"),
    ("run", "agentkit.cli.run", "run"),
    ("dashboard", "agentkit.cli.dashboard", "dashboard"),
)
GROUPS = (
    ("worktree", "agentkit.cli.worktree", "app"),
    ("scale", "agentkit.cli.scale", "app"),
    ("redis", "agentkit.cli.redis", "app"),
    ("config", "agentkit.cli.info", "config_app"),
    ("task", "agentkit.cli.tasks", "app"),
    ("jobs", "agentkit.cli.jobs", "app"),
    ("hooks", "agentkit.cli.hooks", "app"),
)


class _Lazy:
    """A built-in command not loaded yet: import `module`, take `attr`, build it as `app` would have."""

    def __init__(self, name: str, module: str, attr: str, group: bool):
        self.name, self.module, self.attr, self.group = name, module, attr, group

    def load(self):
        import sys

        __import__(self.module)  # not importlib.import_module, which `python -X importtime` does not report
        obj = getattr(sys.modules[self.module], self.attr)
        # Register on a scratch Typer, so the CommandInfo / TyperInfo is the one app.command(name) or
        # app.add_typer(obj, name=name) makes, then convert it as typer.main.get_group_from_info does for
        # the root's children.
        scratch = typer.Typer()
        if self.group:
            scratch.add_typer(obj, name=self.name)
            return typer.main.get_group_from_info(
                scratch.registered_groups[0], pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode, suggest_commands=app.suggest_commands)
        scratch.command(self.name)(obj)
        return typer.main.get_command_from_info(scratch.registered_commands[0],
                                                pretty_exceptions_short=app.pretty_exceptions_short,
                                                rich_markup_mode=app.rich_markup_mode)


class _Commands(MutableMapping):
    """The root group's name -> command mapping; a lazy entry is loaded when its value is first asked for.
    Iterating (names, `in`, len) loads nothing."""

    def __init__(self, entries: dict):
        self._entries = entries

    def __getitem__(self, name: str):
        entry = self._entries[name]
        if isinstance(entry, _Lazy):
            entry = self._entries[name] = entry.load()
        return entry

    def __setitem__(self, name: str, command) -> None:
        self._entries[name] = command

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@contextmanager
def _usage_as_json() -> Iterator[None]:
    """click's usage errors (a bad option value, a missing argument) keep their usage box on stderr; with --json
    they also print the JSON error object, as every other failure does."""
    try:
        yield
    except typer.exceptions.TyperException as exc:
        from agentkit.cli.common import emit_error, wants_json

        if wants_json(sys.argv[1:]) and hasattr(exc, "format_message"):  # click's exceptions, exit 1 or 2
            ctx = getattr(exc, "ctx", None)
            emit_error(exc.exit_code, exc.format_message(), f"see `{ctx.command_path} --help`" if ctx else None)
        raise


class _JsonUsageGroup(TyperGroup):
    """A top-level group whose parsing errors (its own and its sub-commands') honour --json."""

    def make_context(self, *args, **kwargs):
        with _usage_as_json():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_as_json():
            return super().invoke(ctx)


class _RootGroup(_JsonUsageGroup):
    """typer builds the root group from what is registered on `app` (the `demo` command, plugins' commands and
    sub-apps); this adds the lazy built-ins, keeping typer's order and its rule that a later registration of a
    name replaces the earlier one in place."""

    def __init__(self, *, commands=None, **kwargs):
        eager = dict(commands or {})
        command_names = {info.name or typer.main.get_command_name(info.callback.__name__)
                         for info in app.registered_commands}
        entries: dict = {}
        for name, module, attr in COMMANDS:
            entries[name] = _Lazy(name, module, attr, group=False)
        entries.update((name, cmd) for name, cmd in eager.items() if name in command_names)
        for name, module, attr in GROUPS:
            entries[name] = _Lazy(name, module, attr, group=True)
        entries.update((name, cmd) for name, cmd in eager.items() if name not in command_names)
        super().__init__(commands=_Commands(entries), **kwargs)

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # TyperGroup's goes through .items(), which would load every command


app = typer.Typer(name="agentkit", cls=_RootGroup, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Run many coding agents in parallel on one repository: isolated worktrees, "
                       "per-agent Redis DBs and ports, and an elastic capacity band.")


def _chdir(path: Path | None) -> None:
    if path is not None:
        from agentkit.cli.common import handled, wants_json
        from agentkit.errors import usage

        with handled(wants_json(sys.argv[1:])):
            try:
                os.chdir(path)
            except OSError as exc:
                raise usage(f"cannot change to {path}: {exc.strerror}", "pass -C an existing folder") from None


@app.callback()
def root(directory: Path = typer.Option(None, "-C", help="Run as if started in this directory (like git -C).")):
    _chdir(directory)


@app.command("demo")
def demo(directory: Path = typer.Option(None, "--dir", help="Where to build the sample repo "
                                        "(default: a new temporary folder)."),
         agents: int = typer.Option(22, "--agents", help="How many worktrees to create (past 20 the band grows)."),
         keep: bool = typer.Option(False, "--keep", help="Leave the sample repo, worktrees and Redis running.")):
    """Build a sample repo and walk through what agentkit does, on the embedded defaults."""
    from agentkit.cli.demo import run

    run(directory, agents, keep)


def _worktree_app() -> typer.Typer:
    """`agent-worktree …`: the worktree commands with `scale` beside them (for repos that call bin/agent-worktree)."""
    from agentkit.cli import scale, worktree

    wt_app = typer.Typer(name="agent-worktree", cls=_JsonUsageGroup, no_args_is_help=True, add_completion=False,
                         pretty_exceptions_enable=False,
                         help="Agent worktrees and Redis capacity (the same as `agentkit worktree` + `scale`).")
    wt_app.callback()(root)
    for command in worktree.app.registered_commands:
        wt_app.registered_commands.append(command)
    wt_app.add_typer(scale.app, name="scale")
    return wt_app


def __getattr__(name: str):
    if name == "worktree_app":  # built on first use: it imports the worktree and scale modules
        globals()[name] = value = _worktree_app()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _builtin_command(argv: list[str]) -> bool:
    """Is the command a built-in one? Then plugins' commands need not be loaded to parse it."""
    words = [a for a in argv if not a.startswith("-")]
    if "-C" in argv:  # `-C DIR` takes a value before the command
        words = [a for a in argv[argv.index("-C") + 2:] if not a.startswith("-")]
    names = ({name for name, _, _ in COMMANDS + GROUPS} | {g.name for g in app.registered_groups}
             | {c.name or c.callback.__name__ for c in app.registered_commands})
    return bool(words) and words[0] in names


def _register_plugin_commands() -> None:
    if _builtin_command(sys.argv[1:]):
        return
    if os.environ.get("AGENTKIT_DISABLE_PLUGIN_AUTOLOAD") in (None, "", "0") or os.environ.get("AGENTKIT_PLUGINS"):
        from agentkit.plugins import get_manager

        get_manager().hook.register_commands(app=app)


def _run_and_leave(run) -> None:
    """Run a command, then exit without the interpreter's teardown: freeing every imported module (the Redis
    client alone is thousands of objects) costs a short command 25-35 ms after its work is done. Exit handlers
    still run and output is flushed; SQLite needs no close (each commit is already durable in its WAL)."""
    import atexit

    try:
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`| head`): nothing more can be written anyway
        code = code or 1
    os._exit(code or 0)


def _guarded(application, load_plugins: bool = False) -> None:
    """The error boundary around a whole command line: what a command's own `handled` block does not cover
    (option parsing callbacks, rendering, plugin loading) still ends as an error, never as a traceback."""
    from agentkit.cli.common import handled, wants_json

    def run() -> None:
        try:
            with handled(wants_json(sys.argv[1:])):
                if os.environ.get("AGENTKIT_PLUGINS"):  # a name that loads nothing: exit 2 for every command,
                    from agentkit.plugins import check_selected  # also those that never load plugins

                    check_selected()
                if load_plugins:
                    _register_plugin_commands()
                application()
        except typer.Exit as exc:
            sys.exit(exc.exit_code)

    _run_and_leave(run)


def main() -> None:
    _guarded(app, load_plugins=True)


def agent_worktree_main() -> None:
    from agentkit.cli import worktree_app

    _guarded(worktree_app)


def install_docs_main() -> None:
    from agentkit.cli import docs

    _guarded(lambda: typer.run(docs.install_docs))
