"""`agentkit redis start|stop|status`: the managed redis-server under .agents/redis/."""

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, pairs, render, say

app = typer.Typer(help="The Redis this repository uses (managed by agentkit unless redis.url is set).",
                  no_args_is_help=True)
KEYS = ["url", "running", "pid", "databases", "managed", "dir"]


@app.command("start")
def start(as_json: bool = JSON_OPT):
    """Start the managed Redis (a no-op if it runs)."""
    from agentkit import redis

    with handled(as_json):
        data = redis.start(open_repo())
    if data.get("warning"):
        say(f"warning: {data['warning']}")
    render(data, as_json, lambda d: pairs(d, KEYS))


@app.command("stop")
def stop(as_json: bool = JSON_OPT):
    """Stop the managed Redis, saving its keys to .agents/redis/dump.rdb."""
    from agentkit import redis

    with handled(as_json):
        data = redis.stop(open_repo())
    render(data, as_json, lambda d: pairs(d, KEYS))


@app.command("status")
def status(as_json: bool = JSON_OPT):
    """url, running, pid, databases, managed."""
    from agentkit import redis

    with handled(as_json):
        data = redis.status(open_repo())
    render(data, as_json, lambda d: pairs(d, KEYS))
