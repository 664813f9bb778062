"""`agentkit hooks …`: install, uninstall and show agentkit's git hooks; run one from another hook manager."""

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, render, say, table

app = typer.Typer(help="agentkit's git hooks (post-merge, post-checkout, opt-in pre-push), chained to yours.",
                  no_args_is_help=True)

COLUMNS = ["name", "owner", "installed", "current", "chained", "manager", "path"]
ONLY_OPT = typer.Option(None, "--only", metavar="NAMES",
                        help="Hook names, comma-separated or repeated: post-merge, post-checkout, pre-push.")


def _show(data: dict) -> None:
    table(data["hooks"], COLUMNS + (["action"] if data["hooks"] and "action" in data["hooks"][0] else []),
          title=f"hooks in {data['hooks_dir']}" + (f" (core.hooksPath = {data['hooks_path']})"
                                                   if data["hooks_path"] else ""))


@app.command("install")
def install_cmd(only: list[str] = ONLY_OPT,
                force: bool = typer.Option(False, "--force", help="Set a hook that is not agentkit's aside "
                                           "(NAME.agentkit-replaced) instead of chaining to it: it stops running."),
                as_json: bool = JSON_OPT):
    """Install the hooks (default post-merge and post-checkout) into the common git dir or core.hooksPath."""
    from agentkit import hooks

    with handled(as_json):
        data = hooks.install(open_repo(), only, force=force)
    for item in data["hooks"]:
        say(f"{item['name']}: {item['action']}" + (f" (chained to {item['chained']})" if item["chained"] else ""))
        if item["manager"]:
            say(f"note: {item['name']} was {item['manager']}'s hook: see docs/hooks.md on calling agentkit's "
                f"from {item['manager']} instead of chaining")
    if data.get("warning"):
        say(f"warning: {data['warning']}")
    render(data, as_json, _show)


@app.command("uninstall")
def uninstall_cmd(only: list[str] = ONLY_OPT, as_json: bool = JSON_OPT):
    """Remove agentkit's hooks and put back the ones they chained to, byte for byte."""
    from agentkit import hooks

    with handled(as_json):
        data = hooks.uninstall(open_repo(), only)
    for item in data["hooks"]:
        if item["action"] in ("restored", "removed"):
            say(f"{item['name']}: {item['action']}")
    render(data, as_json, _show)


@app.command("status")
def status_cmd(as_json: bool = JSON_OPT):
    """Each hook: agentkit's or foreign, current or not, what it chains to, and where."""
    from agentkit import hooks

    with handled(as_json):
        data = hooks.status(open_repo())
    render(data, as_json, _show)


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_cmd(name: str = typer.Argument(..., help="post-merge, post-checkout or pre-push."),
            args: list[str] = typer.Argument(None, help="The hook's arguments, as git gave them (\"$@\").")):
    """Run one of agentkit's hook scripts (from husky, lefthook or pre-commit); stdin is passed on."""
    import subprocess

    from agentkit import hooks

    with handled(False):
        path = hooks.script(name)
    raise typer.Exit(subprocess.run(["sh", str(path), *(args or [])]).returncode)
