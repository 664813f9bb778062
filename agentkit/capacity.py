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
            raise conflict(f"the top step (slots {lower}-{band.current - 1}) is in use by {', '.join(busy)}",
                           "remove those worktrees first (`agentkit worktree remove SLUG`)")
        change = {"from": band.current, "to": lower, "reason": "scale in"}
        band.current = lower
        band_mod.save(conn, band)
        events.record(conn, "band.shrank", "band", **change)
    write_mirror(repo)
    return {**status(repo, live=False), "change": change}


# ---- the physical ceiling ------------------------------------------------------------------------

def provisioners(repo) -> dict:
    from agentkit.plugins import registered

    return registered(repo.hook.register_provisioners)


def _checked_target(repo, target: int | None) -> int:
    """The --target asked for (default redis.databases), within the bounds redis-server itself accepts."""
    wanted = repo.config["redis.databases"] if target is None else target
    if not 1 <= wanted <= redis.MAX_DATABASES:
        raise usage(f"--target {wanted} is outside 1-{redis.MAX_DATABASES}, the range redis-server accepts for "
                    "`databases`", "choose a number of databases such as 128 (each one costs memory)")
    return wanted


def _provisioner(repo):
    """The restart function of redis.provisioner (default: managed, or command for an external Redis)."""
    name = repo.config["redis.provisioner"] or ("managed" if redis.is_managed(repo) else "command")
    from agentkit.plugins import pick

    return name, pick(provisioners(repo), name, "redis.provisioner", " (or install a plugin that adds one)")


def provision_plan(repo, target: int | None) -> dict:
    """What provisioning would do: `restart` is False when `databases` already reaches the target. The target and
    the provisioner are checked before Redis is started or touched."""
    wanted = _checked_target(repo, target)
    name, _restart = _provisioner(repo)
    ready = redis.ensure_running(repo)
    before = ready["databases"]
    if target is not None and wanted < before:
        raise usage(f"lowering databases from {before} to {wanted} is refused: keys in the DBs above "
                    f"{wanted - 1} would become unreachable", "choose a --target of at least " + str(before))
    return {"schema_version": SCHEMA_VERSION, "url": redis.redacted(ready["url"]), "managed": redis.is_managed(repo),
            "provisioner": name, "databases": before, "target": max(wanted, before), "restart": before < wanted,
            **({"warning": ready["warning"]} if ready["warning"] else {})}


def provision(repo, target: int | None) -> dict:
    """Raise `databases` to `target`, restarting Redis exactly once (or not at all if already there): racing
    provisioners queue on `provision.lock` and the later ones find the work done."""
    plan = provision_plan(repo, target)
    if not plan["restart"]:
        return {**plan, "restarted": False}
    _name, restart = _provisioner(repo)
    with repo.lock("provision"):
        before = redis.ensure_running(repo)["databases"]
        restarted = before < plan["target"]
        if restarted:
            restart(repo, plan["target"])
        ready = redis.ensure_running(repo, with_databases=False)
        after = redis.databases(ready["url"], repo=repo)
    if restarted and after < plan["target"]:
        raise AgentkitError(f"Redis restarted but reports databases {after}, not {plan['target']}",
                            "check that the restart command loads the conf file agentkit wrote")
    with repo.store.tx() as conn:
        band = load(conn, repo.config, after)
        band_mod.save(conn, band)
        if restarted:
            events.record(conn, "redis.provisioned", "redis", **{"from": before, "to": after})
    write_mirror(repo)
    out = {**plan, "databases": after, "previous": before, "restarted": restarted}
    if redis.redacted(ready["url"]) != plan["url"]:
        out["warning"] = (f"Redis came back at {redis.redacted(ready['url'])}, not {plan['url']} (its port was "
                          "taken meanwhile); the env files of the worktrees were rewritten")
    return out
