"""The elastic slot band inside Redis's physical ceiling: allocation, growth, shrinkage, provisioning."""

import json
import sqlite3
import time
from dataclasses import dataclass, field

from agentkit import events
from agentkit.errors import AgentkitError, ExitCode, conflict, usage

SCHEMA_VERSION = 1


def grid_below(size: int, floor: int, step: int) -> int:
    """The band size one step down: sizes sit on floor, floor+step, … (the ceiling may cut the top one short)."""
    steps_up = -(-(size - floor) // step)
    return max(floor, floor + (steps_up - 1) * step)


@dataclass
class Band:
    floor: int
    step: int
    current: int
    physical_max: int
    reserved: list[int]
    dbs: list[int]  # allocatable DB numbers, in slot order
    used: dict[int, str] = field(default_factory=dict)  # redis_db -> slug

    @property
    def ceiling(self) -> int:
        return len(self.dbs)

    @property
    def occupied(self) -> list[int]:
        return [i for i, db in enumerate(self.dbs) if db in self.used]

    def first_free(self) -> int | None:
        return next((db for db in self.dbs[: self.current] if db not in self.used), None)

    def view(self, want: int) -> dict:
        return {"floor": self.floor, "step": self.step, "ceiling": self.ceiling, "current": self.current,
                "occupied": self.occupied, "want": want}

    def summary(self) -> dict:
        used = sum(1 for db in self.dbs[: self.current] if db in self.used)
        return {"floor": self.floor, "step": self.step, "current": self.current, "used": used,
                "free": self.current - used, "ceiling": self.ceiling, "reserved": self.reserved}


def load(conn: sqlite3.Connection, config, physical_max: int | None = None) -> Band:
    row = conn.execute("SELECT current, physical_max FROM band WHERE id = 1").fetchone()
    physical = physical_max or (row["physical_max"] if row else None) or config["redis.databases"]
    reserved = sorted(set(config["redis.reserved"]))
    dbs = [db for db in range(physical) if db not in reserved]
    used = {r["redis_db"]: r["slug"] for r in
            conn.execute("SELECT slug, redis_db FROM worktrees WHERE redis_db IS NOT NULL")}
    floor = config["capacity.floor"]
    band = Band(floor, config["capacity.step"], row["current"] if row else floor, physical, reserved, dbs, used)
    band.current = _clip(band, band.current)
    return band


def _clip(band: Band, size: int) -> int:
    """Keep a band size within [floor, ceiling] (the ceiling wins if lower) and over every used slot."""
    top_used = max(band.occupied, default=-1) + 1
    return max(1, min(band.floor, band.ceiling), top_used, min(size, band.ceiling))


def _save(conn: sqlite3.Connection, band: Band) -> None:
    conn.execute("INSERT INTO band (id, current, physical_max, updated_at) VALUES (1, ?, ?, ?) "
                 "ON CONFLICT(id) DO UPDATE SET current = excluded.current, "
                 "physical_max = excluded.physical_max, updated_at = excluded.updated_at",
                 (band.current, band.physical_max, time.time()))


def _resize(repo, conn: sqlite3.Connection, band: Band, want: int, reason: str) -> dict | None:
    target = repo.hook.band_target(band=band.view(want))
    target = _clip(band, band.current if target is None else int(target))
    change = None
    if target != band.current:
        kind = "band.grew" if target > band.current else "band.shrank"
        change = {"from": band.current, "to": target, "reason": reason}
        events.record(conn, kind, "band", **change)
        band.current = target
    _save(conn, band)
    return change


def full_error(band: Band) -> AgentkitError:
    if band.current < band.ceiling:
        return AgentkitError(f"the band policy will not grow past {band.current} slots",
                             "free slots with `agentkit worktree cleanup`, grow it by hand with `agentkit scale out`, "
                             "or check the band_target plugin (`agentkit plugins`)", ExitCode.CAPACITY)
    return AgentkitError(
        f"physical ceiling {band.physical_max} reached (all {band.ceiling} allocatable DBs in use)",
        f"run `agent-worktree scale --provision --target {max(band.physical_max * 2, 64)} --yes` "
        "or free slots with `agentkit worktree cleanup`",
        ExitCode.CAPACITY,
    )


def allocate(repo, conn: sqlite3.Connection, physical_max: int, slug: str) -> tuple[int, dict | None]:
    """Take the lowest free slot, growing the band first if it is full. Call inside a transaction."""
    band = load(conn, repo.config, physical_max)
    change = None
    if band.first_free() is None:
        change = _resize(repo, conn, band, want=1, reason=f"allocating for {slug}")
    db = band.first_free()
    if db is None:
        raise full_error(band)
    _save(conn, band)
    return db, change


def release(repo, conn: sqlite3.Connection, slug: str) -> dict | None:
    """After a slot was freed (its row is gone): let the policy shrink the band. Call inside a transaction."""
    return _resize(repo, conn, load(conn, repo.config), want=0, reason=f"released by {slug}")


def write_mirror(repo) -> dict:
    """Rewrite .agents/redis-capacity.json from committed state (under a lock, so the last writer is newest)."""
    from agentkit.state.files import atomic_write

    with repo.lock("capacity-file"):
        band = load(repo.store.conn, repo.config)
        data = {"schema_version": SCHEMA_VERSION, **band.summary(), "physical_max": band.physical_max,
                "updated_at": time.time()}
        atomic_write(repo.paths.capacity_file, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def status(repo, live: bool = True) -> dict:
    """The band from state; `physical_max` is asked of Redis when `live` (null with a warning if it is down)."""
    from agentkit import redis

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


def live_physical(repo) -> int | None:
    """`databases` of the running Redis, or None if it is not started or does not answer."""
    from agentkit import redis

    target = redis.url(repo)
    if target is None:
        return None
    try:
        return redis.live_databases(repo, target)
    except AgentkitError:
        return None


def scale_out(repo) -> dict:
    physical = live_physical(repo)
    with repo.store.tx() as conn:
        band = load(conn, repo.config, physical)
        if band.current >= band.ceiling:
            raise full_error(band)
        change = {"from": band.current, "to": min(band.current + band.step, band.ceiling), "reason": "scale out"}
        band.current = change["to"]
        _save(conn, band)
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
        _save(conn, band)
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
    from agentkit import redis

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
    from agentkit import redis

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
        _save(conn, band)
        if restarted:
            events.record(conn, "redis.provisioned", "redis", **{"from": before, "to": after})
    write_mirror(repo)
    return {**plan, "databases": after, "previous": before, "restarted": restarted}
