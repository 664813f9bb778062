"""Read-only commands: snapshot, plugins, config show, events."""

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, render, say, table

config_app = typer.Typer(help="The merged configuration.", no_args_is_help=True)


def snapshot(schema_version: int = typer.Option(None, "--schema-version", metavar="N",
                                                help="Serve this version of the document's shape (default: the "
                                                     "current one; the previous one is kept for one major "
                                                     "version, see docs/snapshot.md)."),
             as_json: bool = JSON_OPT):
    """Everything at once (worktrees, capacity, redis, tasks, jobs, plugin sections): a stable, versioned
    document (docs/snapshot.schema.json)."""
    from agentkit.snapshot import SCHEMA_VERSION
    from agentkit.snapshot import snapshot as take

    with handled(as_json):
        data = take(open_repo(), SCHEMA_VERSION if schema_version is None else schema_version)

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
        for warning in d.get("warnings", []):
            say(f"warning: {warning}")

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
           since: int = typer.Option(None, help="Only events with an id above this (default: from the first; "
                                                "with --follow, from now)."),
           limit: int = typer.Option(100, help="At most this many (not with --follow)."),
           follow: bool = typer.Option(False, "--follow", "-f",
                                       help="Keep printing events as they are appended, until interrupted; "
                                            "with --json one JSON object per line."),
           as_json: bool = JSON_OPT):
    """The event log: every state change, oldest first."""
    from agentkit import events as events_mod

    if follow:
        _follow(kind, since, as_json)
        return
    with handled(as_json):
        rows = events_mod.recent(open_repo().store, kind=kind, since_id=since or 0, limit=limit)
    render({"schema_version": 1, "events": rows}, as_json,
           lambda d: table([{**e, "data": str(e["data"])} for e in d["events"]], ["id", "kind", "subject", "data"]))


def _follow(kind: str | None, since: int | None, as_json: bool) -> None:
    """One line per event as it comes; Ctrl-C, SIGTERM or a closed pipe (`| head`) end it with exit 0."""
    import json
    import os
    import signal
    import sys

    from agentkit import events as events_mod

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with handled(as_json):
            store = open_repo().store
            if since is not None:
                events_mod.recent(store, since_id=since)  # the same checks as without --follow
            for e in events_mod.follow(store, kind=kind, since_id=since):
                line = (json.dumps({"schema_version": 1, **e}, default=str) if as_json
                        else f"{e['id']}\t{e['kind']}\t{e['subject'] or ''}\t{json.dumps(e['data'], sort_keys=True)}")
                try:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                except BrokenPipeError:  # the reader went away (`| head -3`): done, and nothing more to flush
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    return
    except KeyboardInterrupt:
        pass


def version():
    """Print agentkit's version."""
    from agentkit import __version__

    print(__version__)
