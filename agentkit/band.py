"""The elastic slot band inside Redis's physical ceiling: the band table, allocation, growth and shrinkage.

Which slots are used is the worktrees table's business: callers pass it in as `used` ({redis_db: slug})."""

import json
import sqlite3
import time
from dataclasses import dataclass, field

from agentkit import events
from agentkit.errors import AgentkitError, ExitCode

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


def load(conn: sqlite3.Connection, config, used: dict[int, str], physical_max: int | None = None) -> Band:
    row = conn.execute("SELECT current, physical_max FROM band WHERE id = 1").fetchone()
    physical = physical_max or (row["physical_max"] if row else None) or config["redis.databases"]
    reserved = sorted(set(config["redis.reserved"]))
    dbs = [db for db in range(physical) if db not in reserved]
    floor = config["capacity.floor"]
    band = Band(floor, config["capacity.step"], row["current"] if row else floor, physical, reserved, dbs, used)
    band.current = _clip(band, band.current)
    return band


def _clip(band: Band, size: int) -> int:
    """Keep a band size within [floor, ceiling] (the ceiling wins if lower) and over every used slot."""
    top_used = max(band.occupied, default=-1) + 1
    return max(1, min(band.floor, band.ceiling), top_used, min(size, band.ceiling))


def save(conn: sqlite3.Connection, band: Band) -> None:
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
    save(conn, band)
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


def allocate(repo, conn: sqlite3.Connection, physical_max: int, slug: str,
             used: dict[int, str]) -> tuple[int, dict | None]:
    """Take the lowest free slot, growing the band first if it is full. Call inside a transaction."""
    band = load(conn, repo.config, used, physical_max)
    change = None
    if band.first_free() is None:
        change = _resize(repo, conn, band, want=1, reason=f"allocating for {slug}")
    db = band.first_free()
    if db is None:
        raise full_error(band)
    save(conn, band)
    return db, change


def shrink_after_release(repo, conn: sqlite3.Connection, slug: str, used: dict[int, str]) -> dict | None:
    """After a slot was freed (its row is gone): let the policy shrink the band. Call inside a transaction."""
    return _resize(repo, conn, load(conn, repo.config, used), want=0, reason=f"released by {slug}")


def preview_growth(repo, band: Band) -> None:
    """What the policy would grow a full band to, applied to `band` only (nothing is saved): for `plan`."""
    after = repo.hook.band_target(band=band.view(1))
    band.current = max(band.current, min(after or band.current, band.ceiling))


def write_mirror(repo, used_now) -> dict:
    """Rewrite .agents/redis-capacity.json from committed state (under a lock, so the last writer is newest).
    `used_now(conn)` reads the slots in use (worktrees.slots)."""
    from agentkit.state.files import atomic_write

    with repo.lock("capacity-file"):
        conn = repo.store.conn
        band = load(conn, repo.config, used_now(conn))
        data = {"schema_version": SCHEMA_VERSION, **band.summary(), "physical_max": band.physical_max,
                "updated_at": time.time()}
        atomic_write(repo.paths.capacity_file, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


