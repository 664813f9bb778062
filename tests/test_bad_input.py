"""Bad input, table-driven: every case exits with its documented code (docs/exit-codes.md), names the cause on
stderr without a traceback, prints the JSON error object with --json, and changes nothing: the snapshot, every
table's rows, git's branches and the files beside the repository are the same before and after.

Each case runs in a copy of a template prepared once per kind (a repository with tasks and claims, an empty one,
a bare one, a plain folder), so a case costs its own command and one snapshot.

Permission cases. The tests run as root, whom file modes do not stop: a `chmod 000` file is still readable. A
case marked `deny` therefore runs its command under `setpriv --bounding-set=-dac_override,-dac_read_search`:
still uid 0 and the owner of the files, but without the two capabilities that let root ignore file modes, so
modes apply to it exactly as to the user who owns the repository (when the tests do not run as root, the modes
apply anyway and the command runs as it is). An `immutable` case uses `chattr +i`, which stops root too. A
`home_on` case points AGENTKIT_HOME at a tmpfs mounted (read-only, or tiny: a full disk) in a mount namespace of
the command's own (`unshare -m`), so the mount ends with the command and nothing outside ever sees it.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentkit.errors import ExitCode
from tests.conftest import GIT_ENV, _stop_managed

DENY = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
FENCE_PAST_64_BITS = str(2**64)
HUGE = "99999999999999999999"


# ---- what a case does to its copy before the command; each returns the undo, run before the snapshot is taken

def write(name: str, content: str | bytes) -> Callable[[Path], Callable[[], None]]:
    """A file in the repository (a tasks file, a config file); bytes are written as they are."""
    def setup(root: Path) -> Callable[[], None]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path.unlink
    return setup


def folder(name: str) -> Callable[[Path], Callable[[], None]]:
    def setup(root: Path) -> Callable[[], None]:
        (root / name).mkdir()
        return (root / name).rmdir
    return setup


def chmod(name: str, mode: int) -> Callable[[Path], Callable[[], None]]:
    def setup(root: Path) -> Callable[[], None]:
        path = root / name
        before = path.stat().st_mode
        path.chmod(mode)
        return lambda: path.chmod(before)
    return setup


def immutable(name: str) -> Callable[[Path], Callable[[], None]]:
    """chattr +i: no one, root included, may write the file."""
    def setup(root: Path) -> Callable[[], None]:
        path = root / name
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available on this filesystem")
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    return setup


def replace_with(name: str, kind: str) -> Callable[[Path], Callable[[], None]]:
    """Move `name` aside and put a file ("file") or a folder ("dir") in its place."""
    def setup(root: Path) -> Callable[[], None]:
        path, aside = root / name, root / f"{name}.aside"
        path.rename(aside)
        path.write_text("not a folder\n") if kind == "file" else path.mkdir()

        def undo() -> None:
            path.unlink() if kind == "file" else path.rmdir()
            aside.rename(path)
        return undo
    return setup


def both(*setups) -> Callable[[Path], Callable[[], None]]:
    def setup(root: Path) -> Callable[[], None]:
        undos = [s(root) for s in setups]
        return lambda: [undo() for undo in reversed(undos)]
    return setup


def _db_change(change: Callable[[Path, sqlite3.Connection], None]) -> Callable[[Path], Callable[[], None]]:
    """Change the state database by hand (after folding its WAL into the file); the undo puts the file back."""
    def setup(root: Path) -> Callable[[], None]:
        db = root / DB
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        saved = db.read_bytes()
        change(db, conn)
        conn.close()

        def undo() -> None:
            for extra in (f"{DB}-wal", f"{DB}-shm"):
                (root / extra).unlink(missing_ok=True)
            db.write_bytes(saved)
        return undo
    return setup


def sql(statement: str) -> Callable[[Path], Callable[[], None]]:
    return _db_change(lambda db, conn: conn.execute(statement))


def damage(table: str) -> Callable[[Path], Callable[[], None]]:
    """Overwrite the first page of a table's b-tree: SQLite then says "database disk image is malformed"."""
    def change(db: Path, conn: sqlite3.Connection) -> None:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        with db.open("r+b") as fh:
            fh.seek((page - 1) * size)
            fh.write(b"\xff" * 64)
    return _db_change(change)


DB = ".agents/agentkit.db"
CONFIG = ".agents/config.toml"


# ---- the table ----------------------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    code: ExitCode
    says: str  # a part of the message that names the cause
    args: tuple[str, ...]
    kind: str = "repo"  # which template: repo, empty, bare, folder
    env: dict = field(default_factory=dict)
    setup: Callable | None = None  # changes the copy before the command, returns its undo
    deny: bool = False  # run without root's power to ignore file modes
    home_on: str | None = None  # run with AGENTKIT_HOME on a private tmpfs mounted with these options
    json: bool = True  # the command takes --json
    hides: str | None = None  # must not appear in the output (a password)


def C(id, code, says, *args, **kw) -> Case:
    return Case(id, code, says, args, **kw)


U, F, NF, CF, NR = ExitCode.USAGE, ExitCode.FAILED, ExitCode.NOT_FOUND, ExitCode.CONFLICT, ExitCode.NOTHING_READY

CASES = [
    # worktree
    C("wt-slug-trailing-newline", U, r"invalid slug 'a\n'", "worktree", "new", "a\n", "--branch", "feat-nl"),
    C("wt-plan-slug-trailing-newline", U, r"invalid slug 'b\n'", "worktree", "plan", "b\n"),
    C("wt-up-slug-trailing-newline", U, r"invalid slug 'c\n'", "worktree", "up", "c\n"),
    C("wt-remove-slug-trailing-newline", U, r"invalid slug 'd\n'", "worktree", "remove", "d\n"),
    C("wt-empty-slug", U, "invalid slug ''", "worktree", "new", ""),
    C("wt-unicode-slug", U, "invalid slug 'café'", "worktree", "new", "café"),
    C("wt-slug-too-long", U, "invalid slug", "worktree", "new", "a" * 64),
    C("wt-slug-dotdot", U, "invalid slug 'a..b'", "worktree", "new", "a..b"),
    C("wt-slug-dot-lock", U, "invalid slug 'x.lock'", "worktree", "new", "x.lock"),
    C("wt-slug-leading-dash", U, "invalid slug '-x'", "worktree", "new", "--", "-x"),
    C("wt-bad-branch", U, "invalid branch name 'bad..b'", "worktree", "new", "ok", "--branch", "bad..b"),
    C("wt-unknown-base", U, "unknown base ref 'nope'", "worktree", "new", "ok", "--base", "nope"),
    C("wt-no-commits", U, "no commits yet", "worktree", "new", "ok", kind="empty"),
    C("wt-bare-no-commits", U, "no commits yet", "worktree", "new", "ok", kind="bare"),
    C("wt-up-unknown", NF, "unknown worktree 'ghost'", "worktree", "up", "ghost"),
    C("wt-remove-unknown", NF, "unknown worktree 'ghost'", "worktree", "remove", "ghost", "--dry-run"),
    C("wt-cleanup-negative-stale", U, "--stale -1", "worktree", "cleanup", "--stale", "-1"),
    C("wt-cleanup-stale-not-int", U, "is not a valid int", "worktree", "cleanup", "--stale", "x"),
    C("wt-new-missing-slug", U, "Missing argument", "worktree", "new"),
    C("wt-outside-git", U, "not inside a git repository", "worktree", "list", kind="folder"),
    # scale and redis (no --provision targets or provisioners: tests/test_capacity.py owns those)
    C("scale-in-at-floor", U, "at its floor", "scale", "in"),
    C("scale-provision-with-subcommand", U, "does not combine", "scale", "--provision", "--json", "status"),
    C("scale-unknown-subcommand", U, "No such command", "scale", "sideways"),
    C("redis-bind-not-an-ip", U, "redis.bind = '999.1.1.1'", "redis", "start",
      env={"AGENTKIT_REDIS_BIND": "999.1.1.1"}),
    C("redis-bind-unresolvable", U, "does not resolve", "redis", "start",
      env={"AGENTKIT_REDIS_BIND": "no-such-host.invalid"}),
    C("redis-url-bad-scheme", U, "redis.url = 'http://:***@db.example:6379'", "redis", "status",
      env={"AGENTKIT_REDIS_URL": "http://:s3cret@db.example:6379"}, hides="s3cret"),
    # task
    C("import-yaml-date", U, "meta.due is a YAML date (2024-01-01)", "task", "import", "t.yaml",
      setup=write("t.yaml", "- name: ship\n  meta: {due: 2024-01-01}\n")),
    C("import-yaml-binary-value", U, "steps[0] is a YAML bytes", "task", "import", "t.yaml",
      setup=write("t.yaml", "- name: ship\n  steps: [!!binary aGk=]\n")),
    C("import-yaml-nan", U, "meta.x is a YAML float (nan)", "task", "import", "t.yaml",
      setup=write("t.yaml", "- name: ship\n  meta: {x: .nan}\n")),
    C("import-json-latin1", U, "t.json is not UTF-8 text (byte 0xe9", "task", "import", "t.json",
      setup=write("t.json", '[{"name": "caf\xe9"}]'.encode("latin-1"))),
    C("import-binary-yaml", U, "is not UTF-8 text", "task", "import", "t.yaml",
      setup=write("t.yaml", bytes(range(256)))),
    C("import-nul-in-yaml", U, "cannot parse", "task", "import", "t.yaml", setup=write("t.yaml", "- name: a\0b\n")),
    C("import-missing-file", NF, "cannot read", "task", "import", "nope.json"),
    C("import-a-folder", U, "is a folder, not a tasks file", "task", "import", ".agents"),
    C("import-unreadable", U, "'t.json' is not readable", "task", "import", "t.json", deny=True,
      setup=both(write("t.json", "[]"), chmod("t.json", 0))),
    C("import-not-a-list", U, "must hold a list of tasks", "task", "import", "t.json",
      setup=write("t.json", '{"name": "x"}')),
    C("import-bad-json", U, "cannot parse", "task", "import", "t.json", setup=write("t.json", "[{")),
    C("import-cycle", U, "dependency cycle refused", "task", "import", "t.json",
      setup=write("t.json", '[{"id": 10, "name": "x", "depends_on": [11]},'
                            ' {"id": 11, "name": "y", "depends_on": [10]}]')),
    C("import-self-dependency", U, "depends on itself", "task", "import", "t.json",
      setup=write("t.json", '[{"id": 10, "name": "x", "depends_on": [10]}]')),
    C("import-id-past-64-bits", U, "id must be a positive integer", "task", "import", "t.json",
      setup=write("t.json", f'[{{"id": {2**64}, "name": "x"}}]')),
    C("import-negative-id", U, "id must be a positive integer", "task", "import", "t.json",
      setup=write("t.json", '[{"id": -3, "name": "x"}]')),
    C("import-existing-id", U, "id 1 already exists", "task", "import", "t.json",
      setup=write("t.json", '[{"id": 1, "name": "x"}]')),
    C("import-unknown-dependency", U, "depends on unknown task 'nope'", "task", "import", "t.json",
      setup=write("t.json", '[{"name": "x", "depends_on": ["nope"]}]')),
    C("task-add-empty-name", U, "needs a name", "task", "add", ""),
    C("task-add-huge-priority", U, "a number is too large", "task", "add", "x", "--priority", HUGE),
    C("task-add-unknown-dep", NF, "unknown task 99", "task", "add", "x", "--dep", "99"),
    C("task-show-unknown", NF, "unknown task 99", "task", "show", "99"),
    C("task-show-negative", NF, "unknown task -1", "task", "show", "--", "-1"),
    C("task-show-not-int", U, "is not a valid int", "task", "show", "abc"),
    C("task-show-past-64-bits", U, "a number is too large", "task", "show", HUGE),
    C("task-list-bad-status", U, "unknown status 'bogus'", "task", "list", "--status", "bogus"),
    C("task-dep-self", U, "cannot depend on itself", "task", "dep", "add", "2", "2"),
    C("task-dep-cycle", U, "cycle", "task", "dep", "add", "1", "2"),
    C("task-dep-unknown", NF, "unknown task 99", "task", "dep", "add", "2", "99"),
    C("task-dep-rm-absent", NF, "does not depend on", "task", "dep", "rm", "2", "3"),
    C("task-pass-fence-past-64-bits", U, f"--fence {FENCE_PAST_64_BITS} is not a fence", "task", "pass", "1",
      "--fence", FENCE_PAST_64_BITS),
    C("task-pass-fence-zero", U, "--fence 0 is not a fence", "task", "pass", "1", "--fence", "0"),
    C("task-pass-stale-fence", CF, "fence 99 never held task 1", "task", "pass", "1", "--fence", "99"),
    C("task-fail-unknown", NF, "unknown task 99", "task", "fail", "99"),
    C("task-reset-unknown", NF, "unknown task 99", "task", "reset", "99"),
    # claim, heartbeat, release
    C("claim-without-agent", U, "Missing option '--agent'", "claim"),
    C("claim-empty-agent", U, "--agent NAME is required", "claim", "--agent", ""),
    C("claim-bad-lease", U, "--lease '5y' is not a duration", "claim", "--agent", "bob", "--lease", "5y"),
    C("claim-zero-lease", U, "longer than zero", "claim", "--agent", "bob", "--lease", "0"),
    C("claim-lease-past-10-years", U, "at most 10 years", "claim", "--agent", "bob", "--lease", "99999d"),
    C("claim-held-by-another", CF, "already claimed by alice", "claim", "1", "--agent", "bob"),
    C("claim-not-ready", NR, "task 2 is not ready", "claim", "2", "--agent", "bob"),
    C("claim-unknown-task", NF, "unknown task 99", "claim", "99", "--agent", "bob"),
    C("claim-regression-count-zero", U, "--count must be at least 1", "claim", "--agent", "bob", "--regression",
      "--count", "0"),
    C("claim-regression-count-past-64-bits", U, "--count must be at least 1", "claim", "--agent", "bob",
      "--regression", "--count", HUGE),
    C("heartbeat-unknown", NF, "unknown claim 'ghost'", "heartbeat", "ghost"),
    C("heartbeat-bad-lease", U, "is not a duration", "heartbeat", "{claim}", "--lease", "soon"),
    C("heartbeat-released-claim", CF, "is released", "heartbeat", "{released}"),
    C("release-bad-outcome", U, "unknown outcome 'maybe'", "release", "{claim}", "--outcome", "maybe"),
    C("release-unknown", NF, "unknown claim 'ghost'", "release", "ghost"),
    C("release-released-claim", CF, "is released", "release", "{released}", "--outcome", "pass"),
    # jobs and spawn
    C("jobs-show-unknown", NF, "unknown job 99", "jobs", "show", "99"),
    C("jobs-show-not-int", U, "is not a valid int", "jobs", "show", "x"),
    C("jobs-wait-unknown", NF, "unknown job 99", "jobs", "wait", "99"),
    C("jobs-kill-bad-grace", U, "--grace 'x' is not a duration", "jobs", "kill", "1", "--grace", "x"),
    C("jobs-prune-bad-age", U, "--older-than 'old' is not a duration", "jobs", "prune", "--older-than", "old"),
    C("jobs-list-bad-state", U, "unknown state 'bogus'", "jobs", "list", "--state", "bogus"),
    C("jobs-logs-unknown", NF, "unknown job 99", "jobs", "logs", "99", json=False),
    C("spawn-without-command", U, "spawn needs a command", "spawn"),
    C("spawn-bad-env", U, "--env 'NOEQ' is not NAME=value", "spawn", "--env", "NOEQ", "--", "true"),
    C("spawn-zero-timeout", U, "--timeout '0' must be longer than zero", "spawn", "--timeout", "0", "--", "true"),
    C("spawn-unknown-worktree", NF, "unknown worktree 'ghost'", "spawn", "--worktree", "ghost", "--", "true"),
    C("spawn-unknown-executor", U, "unknown executor 'nope'", "spawn", "--executor", "nope", "--", "true"),
    C("spawn-unknown-claim", NF, "no active claim 'ghost'", "spawn", "--claim", "ghost", "--", "true"),
    # events
    C("events-negative-limit", U, "--limit -1", "events", "--limit", "-1"),
    C("events-negative-since", U, "--since -5", "events", "--since", "-5"),
    C("events-limit-past-64-bits", U, "a number is too large", "events", "--limit", HUGE),
    C("events-limit-not-int", U, "is not a valid int", "events", "--limit", "many"),
    # the state database and the .agents/ folder
    C("db-read-only-on-write", F, "is read-only for this user: Permission denied", "task", "add", "x", deny=True,
      setup=chmod(DB, 0o444)),
    C("db-immutable-on-write", F, "is read-only for this user: Operation not permitted", "task", "add", "x",
      setup=immutable(DB)),
    C("db-mode-000-on-read", F, "Permission denied", "task", "list", deny=True, setup=chmod(DB, 0)),
    C("db-mode-000-snapshot", F, "cannot open state database", "snapshot", deny=True, setup=chmod(DB, 0)),
    C("agents-read-only-on-write", F, "/.agents is not writable", "task", "add", "x", deny=True,
      setup=both(sql("PRAGMA user_version"), chmod(".agents", 0o555))),
    C("db-dropped-table", F, "has lost its tasks table", "snapshot", setup=sql("DROP TABLE tasks")),
    C("db-dropped-table-on-write", F, "has lost its claims table", "claim", "--agent", "bob",
      setup=sql("DROP TABLE claims")),
    C("db-malformed", F, "database disk image is malformed", "task", "list", setup=damage("tasks")),
    C("db-newer-schema", F, "has schema version 99", "task", "list", setup=sql("PRAGMA user_version = 99")),
    C("db-is-a-folder", F, "cannot open state database", "task", "list", setup=replace_with(DB, "dir")),
    C("agents-is-a-file", F, "is a file, not a folder", "task", "list", setup=replace_with(".agents", "file")),
    C("locks-is-a-file", F, "lock folder", "claim", "--agent", "bob", setup=replace_with(".agents/locks", "file")),
    C("home-is-a-file", U, "(from AGENTKIT_HOME) is a file", "task", "list", env={"AGENTKIT_HOME": "README.md"}),
    C("home-under-proc", U, "state folder /proc/agentkit (from AGENTKIT_HOME)", "task", "list",
      env={"AGENTKIT_HOME": "/proc/agentkit"}),
    C("home-is-proc", U, "(from AGENTKIT_HOME)", "snapshot", env={"AGENTKIT_HOME": "/proc"}),
    C("home-read-only-filesystem", U, "(from AGENTKIT_HOME): Read-only file system", "task", "list", home_on="ro"),
    C("home-disk-full", F, "No space left on device", "task", "add", "x", home_on="size=4k"),
    # config
    C("config-not-utf8", U, "config.toml is not UTF-8 text", "config", "show",
      setup=write(CONFIG, b'[capacity]\nfloor = "\xff"\n')),
    C("config-unreadable", U, "Permission denied", "config", "show", deny=True,
      setup=both(write(CONFIG, ""), chmod(CONFIG, 0))),
    C("config-is-a-folder", U, "Is a directory", "snapshot", setup=folder(CONFIG)),
    C("config-root-is-a-list", U, "config worktrees.root = [1, 2]", "config", "show",
      setup=write(CONFIG, "[worktrees]\nroot = [1, 2]\n")),
    C("config-root-unknown-field", U, "may hold {repo}", "worktree", "list",
      setup=write(CONFIG, '[worktrees]\nroot = "../{nope}"\n')),
    C("config-env-file-with-slash", U, "must be a plain file name", "config", "show",
      env={"AGENTKIT_WORKTREES_ENV_FILE": "../../outside.env"}),
    C("config-float-for-int", U, "capacity.floor = 1.5", "config", "show",
      setup=write(CONFIG, "[capacity]\nfloor = 1.5\n")),
    C("config-bool-for-int", U, "capacity.step = True", "config", "show",
      setup=write(CONFIG, "[capacity]\nstep = true\n")),
    C("config-unknown-key", U, "unknown config key 'capacity.flor'", "config", "show",
      setup=write(CONFIG, "[capacity]\nflor = 3\n")),
    C("config-toml-syntax", U, "cannot parse", "config", "show", setup=write(CONFIG, "[capacity\n")),
    C("config-nul-byte", U, "cannot parse", "config", "show", setup=write(CONFIG, 'a = "x\0"\n')),
    C("config-port-past-65535", U, "must be at most 65535", "config", "show", env={"AGENTKIT_PORTS_BASE": "70000"}),
    C("config-int-past-64-bits", U, "past 64 bits", "config", "show", env={"AGENTKIT_CAPACITY_FLOOR": HUGE}),
    C("config-negative-reserved-db", U, "must hold Redis DB numbers", "config", "show",
      env={"AGENTKIT_REDIS_RESERVED": "0,-1"}),
    C("config-bad-lease", U, "'forever' is not a duration", "config", "show",
      env={"AGENTKIT_CLAIMS_LEASE": "forever"}),
    C("pyproject-tool-agentkit-not-a-table", U, "is not a table", "config", "show",
      setup=write("pyproject.toml", "[tool]\nagentkit = 1\n")),
    C("pyproject-not-utf8", U, "pyproject.toml is not UTF-8 text", "snapshot",
      setup=write("pyproject.toml", b"[project]\nname = '\xe9'\n")),
    # plugins, env vars, -C, the command line itself
    C("plugins-unknown-name-task-list", U, "no_such_plugin_xyz", "task", "list",
      env={"AGENTKIT_PLUGINS": "no_such_plugin_xyz"}),
    C("plugins-unknown-name-config-show", U, "no_such_plugin_xyz", "config", "show",
      env={"AGENTKIT_PLUGINS": "no_such_plugin_xyz"}),
    C("plugins-unknown-name-snapshot", U, "no_such_plugin_xyz", "snapshot",
      env={"AGENTKIT_PLUGINS": "no_such_plugin_xyz"}),
    C("plugins-unknown-name-plugins", U, "'../evil'", "plugins", env={"AGENTKIT_PLUGINS": "agentkit,../evil"}),
    C("minus-c-missing-folder", U, "cannot change to /nonexistent", "-C", "/nonexistent", "snapshot"),
    C("minus-c-a-file", U, "Not a directory", "-C", "README.md", "task", "list"),
    C("unknown-command", U, "No such command 'frobnicate'", "frobnicate"),
]


# ---- templates, state, the run ------------------------------------------------------------------------------

def _env(extra: dict | None = None) -> dict:
    """The developer's environment without AGENTKIT_* and GIT_* (the module's templates are built before the
    clean_env fixture runs), with a git identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTKIT_", "GIT_"))}
    return {**env, **GIT_ENV, **(extra or {})}


def run(args: list[str], cwd: Path, env: dict | None = None, prefix: tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "agentkit.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=_env(env), stdin=subprocess.DEVNULL, timeout=60)


def git(cwd: Path, *args: str) -> str:
    """git's output, or "" where there is no repository (the plain-folder template)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=_env()).stdout


def ok(args: list[str], cwd: Path) -> dict:
    done = run([*args, "--json"], cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def snapshot(root: Path) -> dict | None:
    done = run(["snapshot", "--json"], root)
    if done.returncode != 0:
        return None
    data = json.loads(done.stdout.replace(str(root), "<repo>"))
    data["jobs"].pop("oldest_queued_wait_s", None)  # the one field that moves by itself
    return data


def db_rows(root: Path):
    """Every table's rows, or the file's bytes when SQLite cannot read it. Reading leaves no -wal or -shm file
    behind that was not there (the test runs as root, who could create them where the command may not)."""
    db = root / DB
    if not db.is_file():
        return None
    extras = [p for p in (root / f"{DB}-wal", root / f"{DB}-shm") if not p.exists()]
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}"))) for t in tables}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return db.read_bytes()
    finally:
        for path in extras:
            path.unlink(missing_ok=True)


def surroundings(root: Path) -> tuple:
    """What a half-done command would leave outside the database: folders beside the repo (worktrees), branches."""
    return sorted(p.name for p in root.parent.iterdir()), git(root, "for-each-ref", "--format=%(refname)")


def _make(kind: str, root: Path) -> dict:
    """A template of one kind; returns the names cases may use in their arguments ({claim}, {released})."""
    if kind == "folder":
        root.mkdir()
        return {}
    if kind == "bare":
        git(root.parent, "init", "-q", "--bare", str(root))
    else:
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
    if kind != "repo":
        ok(["task", "list"], root)  # the state database exists: a failing command must not be what made it
        return {}
    (root / "README.md").write_text("sample\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "init")
    for args in (["task", "add", "a"], ["task", "add", "b", "--dep", "1"], ["task", "add", "c"]):
        ok(args, root)
    names = {"claim": ok(["claim", "1", "--agent", "alice"], root)["claim_id"],
             "released": ok(["claim", "3", "--agent", "carol"], root)["claim_id"]}
    ok(["release", names["released"], "--outcome", "pass"], root)
    ok(["task", "ready"], root)  # fills what reads fill on first use (scores), so later reads change nothing
    return names


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    made = {}
    for kind in ("repo", "empty", "bare", "folder"):
        root = tmp_path_factory.mktemp(f"template-{kind}") / ("app.git" if kind == "bare" else "app")
        names = _make(kind, root)
        made[kind] = (root, names, snapshot(root) if kind != "folder" else None)
    return made


def _deny_works(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    works = subprocess.run([*DENY, "cat", str(probe)], capture_output=True).returncode != 0
    probe.unlink()
    return works


def _private_mount(options: str, at: Path) -> list[str]:
    """A command prefix that runs the command with a tmpfs mounted at `at`, in a mount namespace of its own."""
    return ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "$0" && exec "$@"', str(at)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, templates, tmp_path):
    if case.deny and not _deny_works(tmp_path):
        pytest.skip("cannot take away root's power over file modes here (setpriv)")
    prefix, env = DENY if case.deny else [], dict(case.env)
    if case.home_on:
        home = tmp_path / "home-mount"
        home.mkdir()
        prefix = _private_mount(case.home_on, home)
        if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
            pytest.skip("cannot mount a private tmpfs here (unshare -m, mount)")
        env["AGENTKIT_HOME"] = str(home)
    template, names, snap_before = templates[case.kind]
    root = tmp_path / template.name
    shutil.copytree(template, root, symlinks=True)
    undo = case.setup(root) if case.setup else None
    args = [a.format(**names) if "{" in a else a for a in case.args]
    if case.json and "--json" not in args:
        at = args.index("--") if "--" in args else len(args)
        args = [*args[:at], "--json", *args[at:]]
    try:
        before = db_rows(root), surroundings(root)
        done = run(args, root, env, prefix)
        after = db_rows(root), surroundings(root)
    finally:
        if undo:
            undo()
        _stop_managed(root)
    assert done.returncode == case.code, f"exit {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert case.says in done.stderr, done.stderr
    if case.hides:
        assert case.hides not in done.stderr + done.stdout
    if case.json:
        error = json.loads(done.stdout)["error"]
        assert error["code"] == case.code and error["name"] == ExitCode(case.code).name.lower()
        assert case.says in error["message"]
    else:
        assert done.stdout == ""
    assert after[0] == before[0], "the state database changed"
    assert after[1] == before[1], "folders or branches appeared"
    if snap_before is not None:
        assert snapshot(root) == snap_before, "the snapshot changed"


def test_the_table_covers_every_command_group():
    groups = {c.args[0] if c.args[0] != "-C" else "-C" for c in CASES}
    assert {"worktree", "scale", "redis", "task", "claim", "heartbeat", "release", "jobs", "spawn", "events",
            "snapshot", "plugins", "config", "-C"} <= groups
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert any(c.env for c in CASES) and any(c.deny for c in CASES)
