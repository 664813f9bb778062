"""`agentkit worktree …` (also `agent-worktree …`): plan, new, up, adopt, list, remove, cleanup."""

import sys
from pathlib import Path

import typer

from agentkit.cli.common import JSON_OPT, band_note, handled, open_repo, pairs, render, say, table
from agentkit.errors import usage

app = typer.Typer(help="Agent worktrees: a git worktree, a Redis DB, a port block and an env file per slug.",
                  no_args_is_help=True)

LIST_COLUMNS = ["slug", "status", "branch", "redis_db", "ports", "path"]


def _warn(data: dict) -> None:
    if data.get("warning"):
        say(f"warning: {data['warning']}")


@app.command("plan")
def plan_cmd(slug: str, base: str = typer.Option(None, help="Branch, tag or commit to start from (default HEAD)."),
             branch: str = typer.Option(None, help="Branch name (default agent/SLUG)."), as_json: bool = JSON_OPT):
    """Show what `new SLUG` would do (path, branch, slot, band growth), changing nothing."""
    from agentkit import worktrees

    with handled(as_json):
        data = worktrees.plan(open_repo(), slug, base, branch)
    render(data, as_json, lambda d: (pairs(d, ["slug", "path", "branch", "branch_exists", "redis_db",
                                               "band_grows", "ok"]), [say(f"problem: {p}") for p in d["problems"]]))
    if not data["ok"]:
        raise typer.Exit(data["exit_code"])


@app.command("new")
def new_cmd(slug: str, base: str = typer.Option(None, help="Branch, tag or commit to start from (default HEAD)."),
            branch: str = typer.Option(None, help="Branch name (default agent/SLUG)."), as_json: bool = JSON_OPT):
    """Create a worktree with its own Redis DB (flushed), port block and env file."""
    from agentkit import worktrees

    with handled(as_json):
        data = worktrees.new(open_repo(), slug, base, branch)
    _warn(data)
    band_note(data.get("band_change"))
    say(f"created {data['slug']} at {data['path']} (redis db {data['redis_db']})")
    render(data, as_json, lambda d: pairs(d, ["slug", "path", "branch", "redis_db", "redis_url", "ports",
                                              "env_file"]))


@app.command("up")
def up_cmd(slug: str, as_json: bool = JSON_OPT):
    """Make sure a worktree has its folder, allocation and env file (idempotent; adopts git-only ones)."""
    from agentkit import worktrees

    with handled(as_json):
        data = worktrees.up(open_repo(), slug)
    _warn(data)
    band_note(data.get("band_change"))
    if data["repaired"]:
        say(f"repaired: {', '.join(data['repaired'])}")
    render(data, as_json, lambda d: pairs(d, ["slug", "path", "branch", "redis_db", "redis_url", "ports",
                                              "env_file", "status"]))


@app.command("adopt")
def adopt_cmd(path: Path = typer.Argument(None, help="The worktree's folder (default: the current directory)."),
              as_json: bool = JSON_OPT):
    """Give a worktree agentkit did not make (plain `git worktree add`) its Redis DB, port block and env file."""
    from agentkit import worktrees

    with handled(as_json):
        data = worktrees.adopt(open_repo(), path or Path.cwd())
    _warn(data)
    band_note(data.get("band_change"))
    say(f"adopted {data['path']} as {data['slug']} (redis db {data['redis_db']})" if data["adopted"]
        else f"{data['path']} is agentkit's already, as {data['slug']}")
    render(data, as_json, lambda d: pairs(d, ["slug", "path", "branch", "redis_db", "redis_url", "ports",
                                              "env_file", "status"]))


@app.command("list")
def list_cmd(as_json: bool = JSON_OPT):
    """Every worktree with its status: active, missing, merged, stale, incomplete, or unmanaged."""
    from agentkit import worktrees

    with handled(as_json):
        rows = worktrees.list_all(open_repo())
    render({"schema_version": worktrees.SCHEMA_VERSION, "worktrees": rows}, as_json,
           lambda d: table(d["worktrees"], LIST_COLUMNS))


@app.command("remove")
def remove_cmd(slug: str, force: bool = typer.Option(False, "--force", help="Discard uncommitted changes; "
                                                     "remove even if Redis is down."),
               dry_run: bool = typer.Option(False, "--dry-run", help="Show what would happen."),
               as_json: bool = JSON_OPT):
    """Flush the worktree's Redis DB, release its slot and ports, remove the worktree."""
    from agentkit import worktrees

    with handled(as_json):
        data = worktrees.remove(open_repo(), slug, force=force, dry_run=dry_run)
    _warn(data)
    band_note(data.get("band_change"))
    if not dry_run:
        say(f"removed {slug}" + (f" (flushed redis db {data['redis_db']})" if data.get("flushed") else ""))
    render(data, as_json, lambda d: pairs(d))


@app.command("cleanup")
def cleanup_cmd(merged: bool = typer.Option(True, "--merged/--no-merged", help="Remove worktrees whose branch "
                                            "is merged into the main checkout's HEAD."),
                stale: int = typer.Option(None, "--stale", metavar="DAYS", help="Also remove worktrees with no "
                                          "commit or agentkit activity for DAYS days."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
                yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
                as_json: bool = JSON_OPT):
    """Remove merged, missing and half-made worktrees; never one with uncommitted work."""
    from agentkit import worktrees

    with handled(as_json):
        repo = open_repo()
        preview = worktrees.cleanup(repo, merged=merged, stale_days=stale, dry_run=True)
        data = preview
        if not dry_run and preview["removed"]:
            if not yes:
                slugs = ", ".join(r["slug"] for r in preview["removed"])
                if not sys.stdin.isatty():
                    raise usage(f"refusing to remove {slugs} without --yes and no TTY to ask on",
                                "rerun with --yes, or with --dry-run to only look")
                if not typer.confirm(f"remove {slugs}?", err=True):
                    raise typer.Exit(1)
            data = worktrees.cleanup(repo, merged=merged, stale_days=stale, dry_run=False)
    for item in data["skipped"]:
        say(f"skipped {item['slug']}: {item['skipped_because']}")
    render(data, as_json, lambda d: table([{**r, "reasons": ", ".join(r["reasons"])} for r in d["removed"]],
                                          ["slug", "reasons", "redis_db", "path"],
                                          title="would remove" if d["dry_run"] else "removed"))
