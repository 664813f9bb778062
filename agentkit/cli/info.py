"""Read-only commands: snapshot, plugins, config show, events."""

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, render, table

config_app = typer.Typer(help="The merged configuration.", no_args_is_help=True)


def snapshot(as_json: bool = JSON_OPT):
    """Everything at once (worktrees, capacity, redis, plugin sections): a stable, versioned document."""
    from agentkit.snapshot import snapshot as take

    with handled(as_json):
        data = take(open_repo())

    def human(d):
        print(f"repo  {d['repo']}")
        print(f"redis {d['redis']['url'] or '(managed, not started)'}  running={d['redis']['running']}")
        cap = d["capacity"]
        print(f"band  {cap['used']}/{cap['current']} slots used (floor {cap['floor']}, step {cap['step']}, "
              f"physical {cap['physical_max']})")
        t, j = d["tasks"], d["jobs"]
        print("tasks " + ", ".join(f"{k} {v}" for k, v in t["counts"].items() if v) + f"; ready {t['ready']}")
        print(f"jobs  {j['active']}/{j['capacity']} running, {j['queued']} queued")
        table(d["worktrees"], ["slug", "status", "branch", "redis_db", "path"])

    render(data, as_json, human)


def plugins(as_json: bool = JSON_OPT):
    """The loaded plugins (built-in and installed) and the hooks each implements."""
    from agentkit import plugins as plugins_mod

    with handled(as_json):
        data = {"schema_version": 1, "plugins": plugins_mod.describe()}
    render(data, as_json, lambda d: table([{**p, "hooks": ", ".join(p["hooks"])} for p in d["plugins"]],
                                          ["name", "builtin", "hooks"]))


@config_app.command("show")
def config_show(as_json: bool = JSON_OPT):
    """Every config key with its value and where the value came from."""
    with handled(as_json):
        repo = open_repo()
        data = {"schema_version": 1, "config": repo.config.show()}
    render(data, as_json, lambda d: table(d["config"], ["key", "value", "source"]))


def events(kind: str = typer.Option(None, help="Only events of this kind (e.g. band.grew)."),
           since: int = typer.Option(0, help="Only events with an id above this."),
           limit: int = typer.Option(100, help="At most this many."), as_json: bool = JSON_OPT):
    """The event log: every state change, oldest first."""
    from agentkit import events as events_mod

    with handled(as_json):
        rows = events_mod.recent(open_repo().store, kind=kind, since_id=since, limit=limit)
    render({"schema_version": 1, "events": rows}, as_json,
           lambda d: table([{**e, "data": str(e["data"])} for e in d["events"]], ["id", "kind", "subject", "data"]))


def version():
    """Print agentkit's version."""
    from agentkit import __version__

    print(__version__)
