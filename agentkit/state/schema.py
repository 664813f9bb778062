"""The SQLite schema as an ordered list of migrations; the count is the schema version."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("agentkit")


@migrations()
def m001_foundation(db) -> None:
    db.execute("""
        CREATE TABLE worktrees (
            slug TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            branch TEXT NOT NULL,
            base_commit TEXT,
            redis_db INTEGER UNIQUE,
            port_base INTEGER,
            port_count INTEGER,
            env_file TEXT,
            status TEXT NOT NULL,
            creator_pid INTEGER,
            creator_started REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""")
    db.execute("""
        CREATE TABLE band (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            current INTEGER NOT NULL,
            physical_max INTEGER,
            updated_at REAL NOT NULL
        )""")
    db.execute("""
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT,
            data TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX events_kind ON events(kind)")
