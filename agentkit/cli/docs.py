"""`agentkit install-docs` (also the `install-agent-docs` script): keep AGENTS.md's agentkit section current."""

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, render, say


def install_docs(target: str = typer.Option("AGENTS.md", "--file", help="File to write, relative to the repo root."),
                 check: bool = typer.Option(False, "--check",
                                            help="Change nothing; exit 1 if the file is out of date."),
                 dry_run: bool = typer.Option(False, "--dry-run", help="Show whether it would change."),
                 as_json: bool = JSON_OPT):
    """Write or refresh agentkit's section of AGENTS.md (text outside its markers is kept).

    The section is the pages listed in config docs.agents_pages, in order (each under its own heading, links
    rewritten to resolve from the root), or agentkit's built-in section when the list is empty. The file is the
    one in the current worktree."""
    from agentkit import docs

    with handled(as_json):
        data = docs.install_in(open_repo(), target=target, check=check, dry_run=dry_run)
    if data["written"]:
        say(f"updated {data['path']}")
    elif data["changed"]:
        say(f"{data['path']} is out of date" + ("" if check else " (dry run: not written)"))
        diff = data["diff"]
        say(f"  {diff['added']} line(s) to add, {diff['removed']} to remove; first differences:")
        for line in diff["first"]:
            say(f"  {line[:160]}")
        if check:
            say("  run `agentkit install-docs` to regenerate it")
    else:
        say(f"{data['path']} is up to date")
    render(data, as_json, lambda d: None)
    if check and data["changed"]:
        raise typer.Exit(1)
