"""The state store: migrations, newer and corrupt databases, locks, atomic files, path resolution."""

import sqlite3
import subprocess
import sys

import pytest

from agentkit.errors import ExitCode
from agentkit.state import StateError
from agentkit.state.files import atomic_write
from agentkit.state.locks import named_lock
from agentkit.state.paths import resolve
from agentkit.state.schema import migrations
from agentkit.state.store import SCHEMA_VERSION, open_store


def test_schema_version_matches_the_migrations(repo):
    store = open_store(resolve(repo))
    assert SCHEMA_VERSION == len(migrations._migrations)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    applied = [r["name"] for r in store.rows("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert applied == [m.name for m in migrations._migrations]
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_a_newer_state_database_is_refused_and_left_alone(repo, cli):
    assert cli("worktree", "list").code == 0
    db = repo / ".agents" / "agentkit.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
        before = list(conn.iterdump())
    res = cli("worktree", "new", "a", "--json")
    assert res.code == ExitCode.FAILED
    assert "schema version 99" in res.json["error"]["message"] and "upgrade" in res.json["error"]["hint"]
    with sqlite3.connect(db) as conn:
        assert list(conn.iterdump()) == before
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    assert not (repo.parent / "app-worktrees").exists()


def test_a_corrupt_state_database_is_refused_and_kept(repo, cli):
    db = repo / ".agents" / "agentkit.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not sqlite" * 100)
    res = cli("worktree", "list", "--json")
    assert res.code == ExitCode.FAILED
    assert "unreadable" in res.json["error"]["message"] and "mv" in res.json["error"]["hint"]
    assert db.read_bytes() == b"this is not sqlite" * 100


def test_concurrent_first_opens_migrate_once(repo):
    code = "from agentkit.state.store import open_store; from agentkit.state.paths import resolve; " \
           "s = open_store(resolve()); print(s.conn.execute('PRAGMA user_version').fetchone()[0])"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=repo, stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and set(outs) == {str(SCHEMA_VERSION)}
    store = open_store(resolve(repo))
    assert store.rows("SELECT count(*) AS n FROM _sqlite_migrations")[0]["n"] == len(migrations._migrations)


def test_lock_timeout_exits_5_and_names_the_lock(repo, cli):
    cli("redis", "start")
    paths = resolve(repo)
    with named_lock(paths.agents, "git"):
        res = cli("worktree", "new", "a", "--json", env={"AGENTKIT_LOCKS_TIMEOUT": "1"})
    assert res.code == ExitCode.LOCK_TIMEOUT
    assert "git.lock" in res.json["error"]["message"]
    assert cli("worktree", "list", "--json").json["worktrees"] == [], "the allocation was rolled back"
    assert cli("scale", "status", "--json").json["used"] == 0


def test_lock_timeout_in_process(tmp_path):
    with named_lock(tmp_path, "x"):
        code = ("import sys; from pathlib import Path; from agentkit.state.locks import named_lock\n"
                "from agentkit.state import StateError\n"
                "try:\n    named_lock(Path(sys.argv[1]), 'x', timeout=0.2).__enter__()\n"
                "except StateError as e:\n    print(e.code)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True).stdout
    assert out.strip() == "5"


def test_a_lock_held_by_a_killed_process_is_free_at_once(tmp_path):
    """flock locks die with their process: kill -9 mid-step never leaves a lock for the next command."""
    code = ("import sys, time; from pathlib import Path; from agentkit.state.locks import named_lock\n"
            "with named_lock(Path(sys.argv[1]), 'git'):\n    print('held', flush=True)\n    time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StateError) as refused:
        with named_lock(tmp_path, "git", timeout=0.2):
            pass
    assert f"held by pid {holder.pid}" in refused.value.message
    holder.kill()
    holder.wait()
    with named_lock(tmp_path, "git", timeout=5):  # raises StateError if the dead holder still had it
        pass


def test_atomic_write_replaces_whole_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "d" / "f.json"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_paths_from_linked_worktree_and_agentkit_home(repo, tmp_path, monkeypatch):
    from tests.conftest import git

    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", str(linked))
    (linked / "sub").mkdir()
    paths = resolve(linked / "sub")
    assert paths.root == repo and paths.agents == repo / ".agents"
    monkeypatch.setenv("AGENTKIT_HOME", str(tmp_path / "state"))
    assert resolve(linked).agents == tmp_path / "state"


def test_not_a_repository(tmp_path):
    with pytest.raises(StateError) as exc:
        resolve(tmp_path)
    assert exc.value.code == ExitCode.USAGE


def test_explain_names_the_file_and_leaves_bugs_alone(repo):
    """The error boundary explains what is wrong with the state database file; an error in agentkit's own SQL
    (a typo, a table no migration makes) is not explained away, so it still surfaces as an internal error."""
    from agentkit.state import store as store_mod

    store = open_store(resolve(repo))
    db = resolve(repo).db
    with pytest.raises(sqlite3.OperationalError) as typo:
        store.conn.execute("SELEC 1")
    assert store_mod.explain(typo.value) is None
    with pytest.raises(sqlite3.OperationalError) as unknown:
        store.conn.execute("SELECT * FROM no_such_table_in_the_schema")
    assert store_mod.explain(unknown.value) is None
    store.conn.execute("DROP TABLE jobs")
    with pytest.raises(sqlite3.OperationalError) as dropped:
        store.conn.execute("SELECT * FROM jobs")
    explained = store_mod.explain(dropped.value)
    assert explained.code == ExitCode.FAILED and str(db) in explained.message
    assert "lost its jobs table" in explained.message and f"mv {db}" in explained.hint
    store.close()


def test_a_state_database_locked_past_the_busy_timeout_is_exit_5(repo):
    """Another process holding the write lock longer than busy_timeout (30 s in agentkit; 0 here, so the test
    need not wait) is a lock timeout, naming the database."""
    from agentkit.state import store as store_mod

    store = open_store(resolve(repo))
    holder = sqlite3.connect(resolve(repo).db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    store.conn.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(sqlite3.OperationalError) as busy:
        store.conn.execute("BEGIN IMMEDIATE")
    explained = store_mod.explain(busy.value)
    assert explained.code == ExitCode.LOCK_TIMEOUT and "stayed locked" in explained.message
    assert str(resolve(repo).db) in explained.message
    holder.execute("ROLLBACK")
    store.close()
