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
            branch_created INTEGER NOT NULL DEFAULT 0,
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


@migrations()
def m002_tasks(db) -> None:
    db.execute("""
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            category TEXT NOT NULL DEFAULT '',
            steps TEXT NOT NULL DEFAULT '[]',
            priority INTEGER NOT NULL DEFAULT 1000,
            status TEXT NOT NULL DEFAULT 'pending',
            reason TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            skip_count INTEGER NOT NULL DEFAULT 0,
            meta TEXT NOT NULL DEFAULT '{}',
            claim_id TEXT,
            verified_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""")
    db.execute("CREATE INDEX tasks_status ON tasks(status)")
    db.execute("""
        CREATE TABLE task_deps (
            task_id INTEGER NOT NULL,
            dep_id INTEGER NOT NULL,
            PRIMARY KEY (task_id, dep_id)
        )""")
    db.execute("CREATE INDEX task_deps_dep ON task_deps(dep_id)")
    db.execute("""
        CREATE TABLE claims (
            claim_id TEXT PRIMARY KEY,
            task_id INTEGER NOT NULL,
            agent TEXT NOT NULL,
            kind TEXT NOT NULL,
            prior_status TEXT,
            fence INTEGER NOT NULL UNIQUE,
            state TEXT NOT NULL,
            lease_expires_at REAL NOT NULL,
            outcome TEXT,
            created_at REAL NOT NULL,
            ended_at REAL
        )""")
    db.execute("CREATE INDEX claims_active ON claims(state, lease_expires_at)")
    db.execute("CREATE INDEX claims_task ON claims(task_id, state)")


@migrations()
def m003_jobs(db) -> None:
    db.execute("""
        CREATE TABLE jobs (
            job_id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            command TEXT NOT NULL,
            cwd TEXT,
            worktree TEXT,
            worktree_auto INTEGER NOT NULL DEFAULT 0,
            claim_id TEXT,
            timeout_s REAL,
            grace_s REAL NOT NULL,
            executor TEXT NOT NULL,
            token TEXT NOT NULL,
            log_path TEXT NOT NULL,
            exit_code INTEGER,
            signal INTEGER,
            reason TEXT,
            supervisor_pid INTEGER,
            supervisor_started REAL,
            pid INTEGER,
            pid_started REAL,
            kill_requested_at REAL,
            kill_grace_s REAL,
            submitted_at REAL NOT NULL,
            dispatched_at REAL,
            started_at REAL,
            ended_at REAL
        )""")
    db.execute("CREATE INDEX jobs_state ON jobs(state, job_id)")


@migrations()
def m004_ready_set(db) -> None:
    """Readiness and scores kept in the row, so a claim is one indexed read (agentkit.tasks.table)."""
    for column in ("unmet_deps INTEGER NOT NULL DEFAULT 0", "dependents INTEGER NOT NULL DEFAULT 0",
                   "score INTEGER", "score_parts TEXT"):
        db.execute(f"ALTER TABLE tasks ADD COLUMN {column}")
    db.execute("UPDATE tasks SET unmet_deps = (SELECT count(*) FROM task_deps d LEFT JOIN tasks u ON u.id = d.dep_id "
               "WHERE d.task_id = tasks.id AND (u.id IS NULL OR u.status != 'passing'))")
    # the WHERE is agentkit.tasks.table.READY_WHERE (a test checks they agree); dependents and scores are
    # filled in on first use, when task_scoring has no row yet
    db.execute("CREATE INDEX tasks_ready ON tasks(score DESC, priority, id) "
               "WHERE status IN ('pending', 'failing') AND claim_id IS NULL AND unmet_deps = 0")
    db.execute("CREATE TABLE task_scoring (id INTEGER PRIMARY KEY CHECK (id = 1), signature TEXT NOT NULL)")
    db.execute("CREATE INDEX claims_agent ON claims(agent, state)")


@migrations()
def m005_job_handles(db) -> None:
    """What an executor's submit returned, and why agentkit asked for a kill (user or timeout)."""
    db.execute("ALTER TABLE jobs ADD COLUMN handle TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN kill_reason TEXT")


@migrations()
def m006_claim_lease(db) -> None:
    """The lease a claim was taken with, which a heartbeat without --lease renews it for. NULL (claims made
    before): claims.lease."""
    db.execute("ALTER TABLE claims ADD COLUMN lease_s REAL")


@migrations()
def m007_runs(db) -> None:
    """Job pools (a concurrency limit of their own, `agentkit run`'s coding and testing agents) and claims a job
    holds for its spawner to settle; the orchestrator's runs and their agents."""
    db.execute("ALTER TABLE jobs ADD COLUMN pool TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN keep_claim INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE TABLE job_pools (name TEXT PRIMARY KEY, max_running INTEGER NOT NULL)")
    db.execute("""
        CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY AUTOINCREMENT,
            pid INTEGER NOT NULL,
            pid_started REAL,
            options TEXT NOT NULL DEFAULT '{}',
            started_at REAL NOT NULL,
            ended_at REAL,
            exit_code INTEGER,
            summary TEXT
        )""")
    db.execute("""
        CREATE TABLE run_agents (
            agent_id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            preset TEXT NOT NULL,
            task_id INTEGER,
            claim_id TEXT,
            fence INTEGER,
            attempt INTEGER,
            worktree TEXT,
            branch TEXT,
            job_id INTEGER,
            created_at REAL NOT NULL,
            settled_at REAL,
            outcome TEXT,
            note TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd REAL
        )""")
    db.execute("CREATE INDEX run_agents_open ON run_agents(settled_at, job_id)")
    db.execute("CREATE INDEX run_agents_task ON run_agents(task_id)")


@migrations()
def m008_claim_reports(db) -> None:
    """An agent's own verdict kept on its claim (`task pass|fail` inside `agentkit run`), which the run applies
    after it has merged the agent's branch."""
    db.execute("ALTER TABLE claims ADD COLUMN reported TEXT")
    db.execute("ALTER TABLE claims ADD COLUMN reported_reason TEXT")
