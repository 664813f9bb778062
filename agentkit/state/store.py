"""The SQLite store: one connection per command, WAL, versioned schema, BEGIN IMMEDIATE transactions."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentkit.state import StateError
from agentkit.state.locks import named_lock
from agentkit.state.paths import Paths

# Bump together with a new migration in schema.py (a test checks they agree).
SCHEMA_VERSION = 6


def _corrupt(db: Path, exc: Exception) -> StateError:
    return StateError(
        f"state database {db} is unreadable ({exc})",
        f"it was left as it is: move it aside (mv {db} {db}.broken) and rerun; "
        "`agentkit worktree list` shows git's worktrees again and `agentkit worktree up SLUG` re-adopts them",
    )


class Store:
    def __init__(self, paths: Paths, conn: sqlite3.Connection):
        self.paths = paths
        self.conn = conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One read-then-write step: BEGIN IMMEDIATE takes the write lock before the first read."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def rows(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        return [dict(r) for r in self.conn.execute(sql, params)]

    def close(self) -> None:
        self.conn.close()


def _version(conn: sqlite3.Connection, db: Path) -> int:
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise _corrupt(db, exc) from exc


def _migrate(conn: sqlite3.Connection) -> None:
    import sqlite_utils

    from agentkit.state.schema import migrations

    db = sqlite_utils.Database(conn)
    db.enable_wal()
    migrations.apply(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def open_store(paths: Paths) -> Store:
    """Open (creating or migrating under a file lock) the state database; refuse a newer one."""
    paths.ensure()
    conn = sqlite3.connect(paths.db, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    version = _version(conn, paths.db)
    if version < SCHEMA_VERSION:
        with named_lock(paths.agents, "migrate"):
            version = _version(conn, paths.db)
            if version < SCHEMA_VERSION:
                try:
                    _migrate(conn)
                except sqlite3.DatabaseError as exc:
                    raise _corrupt(paths.db, exc) from exc
            version = SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        conn.close()
        raise StateError(
            f"state database {paths.db} has schema version {version}, newer than this agentkit "
            f"understands ({SCHEMA_VERSION}); nothing was read or changed",
            "upgrade agentkit (pip install -U agentkit) to use this repository's state",
        )
    return Store(paths, conn)
