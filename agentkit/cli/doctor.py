"""`agentkit doctor`: every check of the setup, with its cause and fix; exit 1 when one fails."""

import typer

from agentkit.cli.common import JSON_OPT, handled, render, say, table


def doctor(as_json: bool = JSON_OPT):
    """Check git, the state DB, Redis, locks, worktrees, jobs, claims and AGENTS.md; change nothing.

    Each check is ok, warn or fail with its cause and the command that fixes it. Exit 0 when nothing fails
    (warnings allowed), 1 otherwise; run it first when something is wrong (docs/troubleshooting.md)."""
    from agentkit import doctor as doctor_mod
    from agentkit.errors import ExitCode

    with handled(as_json):
        data = doctor_mod.run()

    def human(d):
        table(d["checks"], ["name", "status", "message"])
        for c in d["checks"]:
            if c["status"] != "ok" and c["fix"]:
                say(f"{c['status']}: {c['name']}: fix: {c['fix']}")
        say("healthy" if d["healthy"] else "not healthy: fix the failed checks above, then run agentkit doctor again")

    render(data, as_json, human)
    if not data["healthy"]:
        raise typer.Exit(ExitCode.FAILED)
