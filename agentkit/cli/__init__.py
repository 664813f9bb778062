"""The command line: typer apps that parse, call one core function and render."""

import os
from pathlib import Path

import typer

from agentkit.cli import docs, info, jobs, redis, scale, tasks, worktree

app = typer.Typer(name="agentkit", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run many coding agents in parallel on one repository: isolated worktrees, "
                       "per-agent Redis DBs and ports, and an elastic capacity band.")


def _chdir(path: Path | None) -> None:
    if path is not None:
        try:
            os.chdir(path)
        except OSError as exc:
            typer.echo(f"error: cannot change to {path}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None


@app.callback()
def root(directory: Path = typer.Option(None, "-C", help="Run as if started in this directory (like git -C).")):
    _chdir(directory)


app.add_typer(worktree.app, name="worktree")
app.add_typer(scale.app, name="scale")
app.add_typer(redis.app, name="redis")
app.add_typer(info.config_app, name="config")
app.add_typer(tasks.app, name="task")
app.command("claim")(tasks.claim)
app.command("heartbeat")(tasks.heartbeat)
app.command("release")(tasks.release)
app.command("reap")(jobs.reap)
app.command("spawn")(jobs.spawn)
app.add_typer(jobs.app, name="jobs")
app.command("health")(jobs.health)
app.command("snapshot")(info.snapshot)
app.command("plugins")(info.plugins)
app.command("events")(info.events)
app.command("version")(info.version)
app.command("install-docs")(docs.install_docs)


@app.command("demo")
def demo(directory: Path = typer.Option(None, "--dir", help="Where to build the sample repo "
                                        "(default: a new temporary folder)."),
         agents: int = typer.Option(22, "--agents", help="How many worktrees to create (past 20 the band grows)."),
         keep: bool = typer.Option(False, "--keep", help="Leave the sample repo, worktrees and Redis running.")):
    """Build a sample repo and walk through what agentkit does, on the embedded defaults."""
    from agentkit.cli.demo import run

    run(directory, agents, keep)


# `agent-worktree …`: the worktree commands with `scale` beside them (for repos that call bin/agent-worktree).
worktree_app = typer.Typer(name="agent-worktree", no_args_is_help=True, add_completion=False,
                           pretty_exceptions_enable=False,
                           help="Agent worktrees and Redis capacity (the same as `agentkit worktree` + `scale`).")
worktree_app.callback()(root)
for command in worktree.app.registered_commands:
    worktree_app.registered_commands.append(command)
worktree_app.add_typer(scale.app, name="scale")


def _builtin_command(argv: list[str]) -> bool:
    """Is the command a built-in one? Then plugins' commands need not be loaded to parse it."""
    words = [a for a in argv if not a.startswith("-")]
    if "-C" in argv:  # `-C DIR` takes a value before the command
        words = [a for a in argv[argv.index("-C") + 2:] if not a.startswith("-")]
    names = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    return bool(words) and words[0] in names


def _register_plugin_commands() -> None:
    import sys

    if _builtin_command(sys.argv[1:]):
        return
    if os.environ.get("AGENTKIT_DISABLE_PLUGIN_AUTOLOAD") in (None, "", "0") or os.environ.get("AGENTKIT_PLUGINS"):
        from agentkit.plugins import get_manager

        get_manager().hook.register_commands(app=app)


def main() -> None:
    import sys

    from agentkit.cli.common import handled

    try:
        with handled("--json" in sys.argv[1:]):
            _register_plugin_commands()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    app()


def agent_worktree_main() -> None:
    worktree_app()


def install_docs_main() -> None:
    typer.run(docs.install_docs)
