"""The event log: every state change appends a row (id, ts, kind, subject, data)."""

import json
import sqlite3
import time


def record(conn: sqlite3.Connection, kind: str, subject: str | None = None, /, **data) -> None:
    """Append an event inside the caller's transaction, so it commits or rolls back with the change."""
    conn.execute("INSERT INTO events (ts, kind, subject, data) VALUES (?, ?, ?, ?)",
                 (time.time(), kind, subject, json.dumps(data, sort_keys=True)))


def recent(store, kind: str | None = None, since_id: int = 0, limit: int = 100) -> list[dict]:
    sql = "SELECT * FROM events WHERE id > ?" + (" AND kind = ?" if kind else "") + " ORDER BY id LIMIT ?"
    params = (since_id, kind, limit) if kind else (since_id, limit)
    rows = store.rows(sql, params)
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows
