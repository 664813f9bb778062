"""Port blocks derived from the Redis slot, so two worktrees never share a port."""

from agentkit.hookspecs import hookimpl


@hookimpl
def port_block(slug: str, redis_db: int, config) -> dict:
    return {"base": config["ports.base"] + redis_db * config["ports.block"], "count": config["ports.block"]}
