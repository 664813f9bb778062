"""`agentkit scale …`: the elastic band (status, out, in) and raising the physical ceiling (--provision)."""

import sys

import typer

from agentkit.cli.common import JSON_OPT, band_note, handled, open_repo, pairs, render, say
from agentkit.errors import usage

app = typer.Typer(help="Redis capacity: the elastic slot band and the physical `databases` ceiling.",
                  invoke_without_command=True)


def _show_status(data: dict) -> None:
    pairs(data, ["floor", "step", "current", "used", "free", "ceiling", "physical_max", "reserved"])
    used = [f"{s['db']}:{s['slug']}" for s in data.get("slots", []) if s["slug"]]
    if used:
        print("slots   " + "  ".join(used))


@app.callback()
def scale(ctx: typer.Context,
          provision: bool = typer.Option(False, "--provision", help="Raise Redis `databases` to --target, "
                                         "restarting Redis exactly once."),
          target: int = typer.Option(None, "--target", help="Physical databases wanted (default redis.databases, 64)."),
          yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before restarting Redis."),
          as_json: bool = JSON_OPT):
    """Show the band (no subcommand), move it by hand (out / in), or raise the physical ceiling (--provision)."""
    if ctx.invoked_subcommand is not None:
        if provision:
            with handled(as_json):
                raise usage("--provision does not combine with a subcommand", "run `scale --provision` on its own")
        return
    if not provision:
        status(as_json=as_json)
        return
    from agentkit import capacity

    with handled(as_json):
        repo = open_repo()
        plan = capacity.provision_plan(repo, target)
        if plan["restart"] and not yes:
            say(f"this restarts Redis at {plan['url']} ({plan['databases']} → {plan['target']} databases): "
                "every stack using it sees its connections drop")
            if not sys.stdin.isatty():
                raise usage("refusing to restart Redis without --yes and no TTY to ask on", "rerun with --yes")
            if not typer.confirm("restart now?", err=True):
                raise typer.Exit(1)
        data = capacity.provision(repo, target)
    if data.get("warning"):
        say(f"warning: {data['warning']}")
    if data["restarted"]:
        say(f"restarted Redis once: databases {data['previous']} → {data['databases']}")
    else:
        say(f"already provisioned: databases = {data['databases']} (target {data['target']}); nothing restarted")
    render(data, as_json, lambda d: pairs(d))


@app.command("status")
def status(as_json: bool = JSON_OPT):
    """The band: floor, step, current, used, free, physical_max, and which worktree holds each slot."""
    from agentkit import capacity

    with handled(as_json):
        data = capacity.status(open_repo())
    if data.get("warning"):
        say(f"warning: {data['warning']}")
    render(data, as_json, _show_status)


@app.command("out")
def out_cmd(as_json: bool = JSON_OPT):
    """Grow the band by one step now (no restart)."""
    from agentkit import capacity

    with handled(as_json):
        data = capacity.scale_out(open_repo())
    band_note(data["change"])
    render(data, as_json, _show_status)


@app.command("in")
def in_cmd(as_json: bool = JSON_OPT):
    """Shrink the band by one step (refused while the top step is in use, never below the floor)."""
    from agentkit import capacity

    with handled(as_json):
        data = capacity.scale_in(open_repo())
    band_note(data["change"])
    render(data, as_json, _show_status)
