"""What a task waits on, why open tasks are not ready, and the counts `task status` shows."""

from agentkit.tasks import table


def unmet(dep_ids, rows: dict[int, tuple[str, str]]) -> list[dict]:
    """The dependencies among dep_ids that are not passing, by id, as {id, name, status}; one without a row is
    status "missing" (name None). `rows` maps a task id to its (status, name). The one rule for what a task waits
    on: `diagnose` and `task show` both read it."""
    out = []
    for d in sorted(dep_ids):
        if d not in rows:
            out.append({"id": d, "name": None, "status": "missing"})
        elif rows[d][0] != "passing":
            out.append({"id": d, "name": rows[d][1], "status": rows[d][0]})
    return out


def waits_on(conn, task_id: int) -> list[dict]:
    """What one task waits on: its dependencies that are not passing (see `unmet`)."""
    found = conn.execute("SELECT d.dep_id, t.status, t.name FROM task_deps d LEFT JOIN tasks t ON t.id = d.dep_id "
                         "WHERE d.task_id = ?", (task_id,)).fetchall()
    return unmet([r[0] for r in found], {r[0]: (r[1], r[2]) for r in found if r[1] is not None})


def describe_waits(waiting: list[dict]) -> str:
    """`3 (failing: 'api'), 12 (missing)`: what `task show` prints after `waits_on`."""
    return ", ".join(f"{w['id']} ({w['status']})" if w["name"] is None else f"{w['id']} ({w['status']}: {w['name']!r})"
                     for w in waiting)


def diagnose(conn, holders: dict[int, dict] | None = None) -> list[dict]:
    """For each open task that is not ready: what it waits on (unmet, dead, missing deps; a holder; itself).

    `holders` maps a task id to whoever holds it (``agent``, ``lease_expires_at``); claims supplies it."""
    holders = holders or {}
    found = conn.execute("SELECT id, status, name, attempts FROM tasks").fetchall()
    statuses = {r[0]: (r[1], r[2]) for r in found}
    attempts = {r[0]: r[3] for r in found}
    deps = table.deps_map(conn)
    out = []
    for task_id, (status, name) in sorted(statuses.items()):
        if status == "passing":
            continue
        waiting = unmet(deps.get(task_id, ()), statuses)
        item = {"id": task_id, "name": name, "status": status, "attempts": attempts[task_id],
                "unmet": [w for w in waiting if w["status"] not in ("dead", "missing")],
                "dead": [w["id"] for w in waiting if w["status"] == "dead"],
                "missing": [w["id"] for w in waiting if w["status"] == "missing"]}
        if task_id in holders:
            item["claimed_by"] = {k: holders[task_id][k] for k in ("agent", "lease_expires_at")}
        if status in table.READY_STATUSES and not (item["unmet"] or item["dead"] or item["missing"]) \
                and task_id not in holders:
            continue  # ready
        out.append(item)
    return out


def stuck_lines(items: list[dict]) -> list[str]:
    """Each item of `diagnose` as a line: `task 7 (ui) waits on 3 (dead after 3 attempts)`. A dead dependency
    is an item of its own, so its attempts are read from there."""
    attempts = {it["id"]: it["attempts"] for it in items}
    lines = []
    for it in items:
        why = [f"is dead after {it['attempts']} attempts"] if it["status"] == "dead" else []
        why += [f"waits on {d} (dead after {attempts.get(d, '?')} attempts)" for d in it["dead"]]
        why += [f"waits on {d} (missing)" for d in it["missing"]]
        why += [f"waits on {u['id']} ({u['status']})" for u in it["unmet"]]
        if it.get("claimed_by"):
            why.append(f"is claimed by {it['claimed_by']['agent']}")
        lines.append(f"task {it['id']} ({it['name']}) " + ("; ".join(why) or f"is {it['status']}"))
    return lines


def describe_stuck(items: list[dict]) -> str:
    """The first ten `stuck_lines`, one per line, for a message."""
    lines, more = stuck_lines(items)[:10], len(items) - 10
    return "\n  ".join(lines) + (f"\n  … and {more} more" if more > 0 else "")


def status_in(conn, holders: dict[int, dict] | None = None) -> dict:
    counts = table.counts(conn)
    ready_count = table.count_ready(conn)
    remaining = sum(n for s, n in counts.items() if s != "passing")
    out = {"schema_version": 1, "counts": counts, "total": sum(counts.values()), "ready": ready_count,
           "remaining": remaining, "stuck": remaining > 0 and ready_count == 0 and counts["in_progress"] == 0}
    if remaining and not ready_count:
        out["diagnosis"] = diagnose(conn, holders)
    return out
