"""The event log: every state change appends a row (id, ts, kind, subject, data)."""

import json
import sqlite3
import time

from agentkit.errors import usage


def record(conn: sqlite3.Connection, kind: str, subject: str | None = None, /, **data) -> None:
    """Append an event inside the caller's transaction, so it commits or rolls back with the change."""
    conn.execute("INSERT INTO events (ts, kind, subject, data) VALUES (?, ?, ?, ?)",
                 (time.time(), kind, subject, json.dumps(data, sort_keys=True)))


def recent(store, kind: str | None = None, since_id: int = 0, limit: int = 100) -> list[dict]:
    if limit < 1:  # SQLite reads LIMIT -1 as "no limit"
        raise usage(f"--limit {limit}: give at least 1", "for example: agentkit events --limit 50")
    if since_id < 0:
        raise usage(f"--since {since_id}: give an event id (0 for the first)", "event ids are 1 and up")
    sql = "SELECT * FROM events WHERE id > ?" + (" AND kind = ?" if kind else "") + " ORDER BY id LIMIT ?"
    params = (since_id, kind, limit) if kind else (since_id, limit)
    rows = store.rows(sql, params)
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


def last_id(store) -> int:
    return store.rows("SELECT coalesce(max(id), 0) AS n FROM events")[0]["n"]


def follow(store, kind: str | None = None, since_id: int | None = None, every: float = 0.05):
    """Events as they are appended, oldest first, forever: from after `since_id`, or from now when it is None.
    Between reads it checks SQLite's data_version, which moves only when another connection commits, so an
    idle log costs one tiny query per `every` seconds."""
    since_id = last_id(store) if since_id is None else since_id
    seen_version = None
    while True:
        version = store.rows("PRAGMA data_version")[0]["data_version"]
        if version != seen_version:
            seen_version = version
            while batch := recent(store, kind=kind, since_id=since_id, limit=500):
                yield from batch
                since_id = batch[-1]["id"]
        time.sleep(every)
