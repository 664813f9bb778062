"""The SQLite store: one connection per command, WAL, versioned schema, BEGIN IMMEDIATE transactions."""

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentkit.state import ExitCode, StateError
from agentkit.state.locks import named_lock
from agentkit.state.paths import Paths

# Bump together with a new migration in schema.py (a test checks they agree).
SCHEMA_VERSION = 8


# The state database this process opened (a command opens one): the file that `explain` names.
_opened: Path | None = None


def _corrupt(db: Path, exc: Exception, what: str = "is unreadable") -> StateError:
    return StateError(
        f"state database {db} {what} ({exc})",
        f"it was left as it is: move it aside (mv {db} {db}.broken) and rerun; "
        "`agentkit worktree list` shows git's worktrees again and `agentkit worktree up SLUG` re-adopts them",
    )


def _access_hint(db: Path) -> str:
    return (f"give the user running agentkit read and write access to {db}, its -wal and -shm files and the "
            f"folder {db.parent} (ls -la {db.parent}), or run agentkit as the user who owns them")


def _blocked(db: Path) -> str | None:
    """Which of the files SQLite needs this user cannot open for writing, and why (None: it is not that)."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            os.close(os.open(path, os.O_RDWR))
        except FileNotFoundError:
            continue
        except OSError as exc:
            return exc.strerror if path == db else f"{path.name}: {exc.strerror}"
    if not os.access(db.parent, os.W_OK | os.X_OK):
        return f"its folder {db.parent} is not writable"
    return None


def _schema_tables() -> set[str]:
    """The tables the migrations create (built in memory: only an error path pays for it)."""
    conn = sqlite3.connect(":memory:")
    _migrate(conn)
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def explain(exc: sqlite3.Error) -> StateError | None:
    """A failure of the state database file as an error naming the file, its cause and the fix; None when the
    failure is not the file's (a bug in agentkit's own SQL stays an internal error)."""
    db = _opened
    if db is None:
        return None
    name, text = getattr(exc, "sqlite_errorname", "") or "", str(exc)
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return StateError(f"state database {db} is read-only for this user: {_blocked(db) or text}",
                          _access_hint(db))
    if name.startswith("SQLITE_CANTOPEN") or "unable to open database file" in text:
        return StateError(f"cannot open state database {db}: {_blocked(db) or text}", _access_hint(db))
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return _corrupt(db, exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
        return StateError(f"state database {db} stayed locked by another process ({text})",
                          f"another agentkit command holds its write lock: retry, or look for a hung one (fuser {db})",
                          ExitCode.LOCK_TIMEOUT)
    if name.startswith(("SQLITE_IOERR", "SQLITE_FULL")):
        return StateError(f"cannot write state database {db} ({text})",
                          "check the disk (free space, errors), then rerun")
    missing = re.match(r"no such table: (?:main\.)?(\w+)", text)
    if missing and missing.group(1) in _schema_tables():
        return _corrupt(db, exc, f"has lost its {missing.group(1)} table; damaged or edited by hand")
    return None


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


def _version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _migrate(conn: sqlite3.Connection) -> None:
    import sqlite_utils

    from agentkit.state.schema import migrations

    db = sqlite_utils.Database(conn)
    db.enable_wal()
    migrations.apply(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def open_store(paths: Paths) -> Store:
    """Open (creating or migrating under a file lock) the state database; refuse a newer one."""
    global _opened
    paths.ensure()
    _opened = paths.db
    try:
        conn = sqlite3.connect(paths.db, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        # WAL with synchronous=NORMAL: a commit survives any process crash (kill -9 included) and the database
        # stays consistent; only an OS crash or power loss may roll back the last commits. FULL would fsync on
        # every commit: 250 µs instead of 7 on this machine's disk, under the write lock everyone queues on.
        conn.execute("PRAGMA synchronous = NORMAL")
        version = _version(conn)
        if version < SCHEMA_VERSION:
            with named_lock(paths.agents, "migrate"):
                if _version(conn) < SCHEMA_VERSION:
                    _migrate(conn)
            version = SCHEMA_VERSION
    except sqlite3.Error as exc:
        raise explain(exc) or _corrupt(paths.db, exc) from exc
    if version > SCHEMA_VERSION:
        conn.close()
        raise StateError(
            f"state database {paths.db} has schema version {version}, newer than this agentkit "
            f"understands ({SCHEMA_VERSION}); nothing was read or changed",
            "upgrade agentkit (pip install -U agentkit) to use this repository's state",
        )
    return Store(paths, conn)
