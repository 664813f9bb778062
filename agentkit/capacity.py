"""Capacity commands: the band's status, scale out/in, and raising Redis's physical ceiling (provisioning).

It joins the band (agentkit.band) with the slots the worktrees hold and with the live Redis."""


from agentkit import band as band_mod
from agentkit import events, redis, worktrees
from agentkit.band import SCHEMA_VERSION, Band, full_error, grid_below
from agentkit.errors import AgentkitError, conflict, usage

__all__ = ["grid_below", "load", "provision", "provision_plan", "provisioners", "scale_in", "scale_out", "status",
           "write_mirror"]


def load(conn, config, physical_max: int | None = None) -> Band:
    """The band with the slots worktrees hold now."""
    return band_mod.load(conn, config, worktrees.slots(conn), physical_max)


def write_mirror(repo) -> dict:
    return band_mod.write_mirror(repo, worktrees.slots)


def status(repo, live: bool = True) -> dict:
    """The band from state; `physical_max` is asked of Redis when `live` (null with a warning if it is down)."""
    physical, warning = None, None
    if live:
        target = redis.url(repo)
        if target is None:
            warning = "the managed Redis has not been started yet: run `agentkit redis start`"
        else:
            try:
                physical = redis.live_databases(repo, target)
            except AgentkitError as exc:
                warning = f"{exc.message}; showing the band from state"
    band = load(repo.store.conn, repo.config, physical)
    out = {"schema_version": SCHEMA_VERSION, **band.summary(),
           "physical_max": physical if live else band.physical_max,
           "slots": [{"slot": i, "db": db, "slug": band.used.get(db)} for i, db in enumerate(band.dbs[: band.current])]}
    if warning:
        out["warning"] = warning
    return out


def scale_out(repo) -> dict:
    physical = redis.databases_if_up(repo)
    with repo.store.tx() as conn:
        band = load(conn, repo.config, physical)
        if band.current >= band.ceiling:
            raise full_error(band)
        change = {"from": band.current, "to": min(band.current + band.step, band.ceiling), "reason": "scale out"}
        band.current = change["to"]
        band_mod.save(conn, band)
        events.record(conn, "band.grew", "band", **change)
    write_mirror(repo)
    return {**status(repo, live=False), "change": change}


def scale_in(repo) -> dict:
    with repo.store.tx() as conn:
        band = load(conn, repo.config)
        if band.current <= min(band.floor, band.ceiling):
            raise usage(f"the band is at its floor ({band.current} slots) and cannot shrink",
                        "lower capacity.floor in .agents/config.toml to idle smaller")
        lower = grid_below(band.current, band.floor, band.step)
        busy = [band.used[db] for db in band.dbs[lower: band.current] if db in band.used]
        if busy:
            top = band.dbs[lower: band.current]
            raise conflict(f"the top step (redis dbs {top[0]}-{top[-1]}) is in use by {', '.join(busy)}",
                           "remove those worktrees first (`agentkit worktree remove SLUG`)")
        change = {"from": band.current, "to": lower, "reason": "scale in"}
        band.current = lower
        band_mod.save(conn, band)
        events.record(conn, "band.shrank", "band", **change)
    write_mirror(repo)
    return {**status(repo, live=False), "change": change}


# ---- the physical ceiling ------------------------------------------------------------------------

def provisioners(repo) -> dict:
    found: dict = {}
    # pluggy calls plugins registered later first and built-ins last: the first registration of a name wins
    repo.hook.register_provisioners(register=lambda name, fn: found.setdefault(name, fn))
    return found


def provision_plan(repo, target: int | None) -> dict:
    """What provisioning would do: `restart` is False when `databases` already reaches the target."""
    explicit = target is not None
    target = target or repo.config["redis.databases"]
    if target < 1:
        raise usage(f"--target {target} must be a positive number of databases")
    base = redis.ensure(repo)
    before = redis.databases(base, repo=repo)
    if explicit and target < before:
        raise usage(f"lowering databases from {before} to {target} is refused: keys in the DBs above "
                    f"{target - 1} would become unreachable", "choose a --target of at least " + str(before))
    name = repo.config["redis.provisioner"] or ("managed" if redis.is_managed(repo) else "command")
    return {"schema_version": SCHEMA_VERSION, "url": redis.redacted(base), "managed": redis.is_managed(repo),
            "provisioner": name,
            "databases": before, "target": max(target, before), "restart": before < target}


def provision(repo, target: int | None) -> dict:
    """Raise `databases` to `target`, restarting Redis exactly once (or not at all if already there)."""
    plan = provision_plan(repo, target)
    if not plan["restart"]:
        return {**plan, "restarted": False}
    found = provisioners(repo)
    if plan["provisioner"] not in found:
        raise usage(f"unknown redis.provisioner {plan['provisioner']!r}",
                    f"choose one of: {', '.join(sorted(found))} (or install a plugin that adds one)")
    with repo.lock("provision"):
        before = redis.databases(redis.ensure(repo), repo=repo)
        restarted = before < plan["target"]
        if restarted:
            found[plan["provisioner"]](repo, plan["target"])
        after = redis.databases(redis.ensure(repo), repo=repo)
    if restarted and after < plan["target"]:
        raise AgentkitError(f"Redis restarted but reports databases {after}, not {plan['target']}",
                            "check that the restart command loads the conf file agentkit wrote")
    with repo.store.tx() as conn:
        band = load(conn, repo.config, after)
        band_mod.save(conn, band)
        if restarted:
            events.record(conn, "redis.provisioned", "redis", **{"from": before, "to": after})
    write_mirror(repo)
    return {**plan, "databases": after, "previous": before, "restarted": restarted}
