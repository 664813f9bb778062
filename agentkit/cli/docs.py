"""`agentkit install-docs` (also the `install-agent-docs` script): keep AGENTS.md's agentkit section current."""

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, render, say


def install_docs(target: str = typer.Option("AGENTS.md", "--file", help="File to write, relative to the repo root."),
                 check: bool = typer.Option(False, "--check",
                                            help="Change nothing; exit 1 if the file is out of date."),
                 dry_run: bool = typer.Option(False, "--dry-run", help="Show whether it would change."),
                 as_json: bool = JSON_OPT):
    """Write or refresh agentkit's section of AGENTS.md (text outside its markers is kept)."""
    from agentkit import docs

    with handled(as_json):
        data = docs.install(open_repo().root, target, check=check, dry_run=dry_run)
    if data["written"]:
        say(f"updated {data['path']}")
    elif data["changed"]:
        say(f"{data['path']} is out of date" + ("" if check else " (dry run: not written)"))
    else:
        say(f"{data['path']} is up to date")
    render(data, as_json, lambda d: None)
    if check and data["changed"]:
        raise typer.Exit(1)
