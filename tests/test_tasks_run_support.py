"""What `agentkit run` needs from the task commands: importing an autocoder features.db, `task show` naming what a
task waits on, and an agent reporting its own outcome from its environment (AGENTKIT_TASK_ID, AGENTKIT_FENCE)."""

import json
import sqlite3
from pathlib import Path

import pytest

from agentkit import tasks
from agentkit.errors import ExitCode
from agentkit.repo import Repo

# autocoder's features table as its SQLAlchemy model creates it (JSON columns are TEXT; booleans 0/1)
FEATURES = ("CREATE TABLE features (id INTEGER NOT NULL PRIMARY KEY, priority INTEGER NOT NULL, "
            "category VARCHAR(100) NOT NULL, name VARCHAR(255) NOT NULL, description TEXT NOT NULL, "
            "steps JSON NOT NULL, passes BOOLEAN, in_progress BOOLEAN{deps})")


def features_db(path: Path, rows: list[tuple], dependencies: bool = True, wal: bool = False) -> Path:
    """A features.db with `rows` (id, priority, category, name, description, steps, passes, in_progress[, deps]);
    steps and deps given as Python values are stored as JSON text, strings as they are."""
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(FEATURES.format(deps=", dependencies JSON" if dependencies else ""))
    conn.execute("CREATE INDEX ix_features_priority ON features (priority)")
    for row in rows:
        row = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in row]
        conn.execute(f"INSERT INTO features VALUES ({', '.join('?' * len(row))})", row)
    conn.commit()
    conn.close()
    return path


def tasks_of(cli) -> dict[int, dict]:
    return {t["id"]: t for t in cli("task", "list", "--json").json["tasks"]}


def edges_of(cli) -> list[list[int]]:
    return cli("task", "graph", "--json").json["edges"]


def no_traceback(res) -> None:
    assert "Traceback" not in res.err and "Traceback" not in res.out, res.err


# ---- task import of an autocoder features.db ------------------------------------------------------------

PROJECT = [
    (1, 1, "backend", "db schema", "tables for orders", ["write migration", "run it"], 1, 0, None),
    (2, 2, "backend", "api", "REST endpoints", ["handler", "test"], 0, 1, [1]),  # in_progress: ignored
    (3, 3, "frontend", "ui", "order form", [], 0, 0, "null"),  # SQLAlchemy's JSON writes None as 'null'
    (7, 4, "frontend", "e2e", "browser tests", ["playwright"], 0, 0, [2, 3]),
]


def test_a_features_db_is_imported_with_its_ids_status_and_dependencies(repo, cli, tmp_path):
    db = features_db(tmp_path / "features.db", PROJECT)
    res = cli("task", "import", str(db), "--json")
    assert res.code == 0, res.err
    assert res.json == {"schema_version": 1, "imported": 4, "ids": [1, 2, 3, 7], "renumbered": {}}
    got = tasks_of(cli)
    assert {i: t["status"] for i, t in got.items()} == {1: "passing", 2: "pending", 3: "pending", 7: "pending"}
    api = cli("task", "show", "2", "--json").json
    assert (api["name"], api["priority"], api["category"], api["description"], api["steps"]) == (
        "api", 2, "backend", "REST endpoints", ["handler", "test"])
    assert api["meta"] == {"autocoder_id": 2} and api["claim"] is None and api["depends_on"] == [1]
    assert sorted(edges_of(cli)) == [[2, 1], [7, 2], [7, 3]]
    assert [t["id"] for t in cli("task", "ready", "--json").json["tasks"]] == [2, 3], "schema passes already"
    assert cli("claim", "--agent", "a", "--json").json["task_id"] == 2, "in_progress in autocoder claims nothing here"


def test_taken_ids_get_new_ones_and_dependencies_follow_them(repo, cli, tmp_path):
    for name in ("mine-1", "mine-2"):
        cli("task", "add", name)
    db = features_db(tmp_path / "features.db", PROJECT)
    res = cli("task", "import", str(db), "--json")
    assert res.code == 0, res.err
    assert res.json["ids"] == [4, 5, 3, 7] and res.json["renumbered"] == {"1": 4, "2": 5}, "past the ids in use"
    assert "new ones: feature 1 → task 4, feature 2 → task 5" in res.err
    got = tasks_of(cli)
    assert (got[4]["name"], got[4]["meta"], got[5]["name"]) == ("db schema", {"autocoder_id": 1}, "api")
    assert (got[1]["name"], got[2]["name"]) == ("mine-1", "mine-2"), "existing tasks untouched"
    assert sorted(edges_of(cli)) == [[5, 4], [7, 3], [7, 5]], "deps name autocoder ids, mapped to the new ones"


def test_an_older_db_without_the_dependencies_column(repo, cli, tmp_path):
    rows = [(1, 10, "core", "init", "set up", ["git init"], 0, 0), (2, 20, "core", "cli", "", [], 1, 0)]
    db = features_db(tmp_path / "old.db", rows, dependencies=False)
    res = cli("task", "import", str(db), "--json")
    assert res.code == 0, res.err
    assert res.json["ids"] == [1, 2] and edges_of(cli) == []
    assert {i: t["status"] for i, t in tasks_of(cli).items()} == {1: "pending", 2: "passing"}


def test_detected_by_its_header_not_its_name(repo, cli, tmp_path):
    db = features_db(tmp_path / "tasks.json", PROJECT[:1], wal=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = cli("task", "import", str(db), "--json")
    assert res.code == 0 and res.json["ids"] == [1], res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "reading leaves no -wal/-shm files behind"
    (tmp_path / "features.db").write_text(json.dumps([{"name": "from json"}]))
    res = cli("task", "import", str(tmp_path / "features.db"), "--json")
    assert res.code == 0 and tasks_of(cli)[res.json["ids"][0]]["name"] == "from json"


def _refused(cli, path: Path, *expected: str) -> None:
    before = cli("task", "list", "--json").json
    res = cli("task", "import", str(path), "--json")
    assert res.code == ExitCode.USAGE, (res.code, res.err)
    no_traceback(res)
    for text in expected:
        assert text in res.json["error"]["message"], res.json["error"]["message"]
    assert text in res.err
    assert cli("task", "list", "--json").json == before, "nothing imported"


def test_a_features_db_with_bad_rows_is_refused_with_every_problem(repo, cli, tmp_path):
    rows = [(1, 1, "c", "a", "", "[not json", 0, 0, None),
            (2, 1, "c", "b", "", [], 0, 0, "{oops"),
            (3, 1, "c", "c", "", [], 0, 0, ["x"]),
            (4, 1, "c", "d", "", [], 0, 0, [99]),
            (5, 1, "c", "e", "", [], 0, 0, [5]),
            (6, 1, "c", "f", "", {"a": 1}, 0, 0, None)]
    _refused(cli, features_db(tmp_path / "features.db", rows), "6 problem(s), nothing imported",
             "feature 1 ('a'): steps is not valid JSON", "feature 2 ('b'): dependencies is not valid JSON",
             "feature 3 ('c'): dependencies must be a JSON list of feature ids", "feature 4 ('d'): depends on unknown "
             "feature id 99", "feature 5 ('e'): depends on itself", "feature 6 ('f'): steps must be a list")


def test_a_cycle_among_features_is_refused(repo, cli, tmp_path):
    rows = [(1, 1, "c", "a", "", [], 0, 0, [3]), (2, 1, "c", "b", "", [], 0, 0, [1]),
            (3, 1, "c", "c", "", [], 0, 0, [2])]
    _refused(cli, features_db(tmp_path / "features.db", rows), "dependency cycle refused: 1 → 3 → 2 → 1")


def test_sqlite_files_that_are_not_a_features_db(repo, cli, tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE todo (id INTEGER PRIMARY KEY, title TEXT)")
    conn.commit()
    conn.close()
    _refused(cli, other, "SQLite database without a features table")
    conn = sqlite3.connect(tmp_path / "noname.db")
    conn.execute("CREATE TABLE features (id INTEGER PRIMARY KEY, title TEXT)")
    conn.commit()
    conn.close()
    _refused(cli, tmp_path / "noname.db", "its features table has no name column")
    torn = tmp_path / "torn.db"
    torn.write_bytes(features_db(tmp_path / "whole.db", PROJECT).read_bytes()[:100] + b"\0" * 10)
    _refused(cli, torn, "cannot read", "as an autocoder features.db")
    header_only = tmp_path / "header.db"
    header_only.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    _refused(cli, header_only, "header.db")


# ---- task show: what a task waits on --------------------------------------------------------------------

def test_task_show_names_what_a_task_waits_on(repo, cli):
    for name in ("schema", "api", "ui", "flaky"):
        cli("task", "add", name)
    cli("task", "add", "e2e", "--dep", "1", "--dep", "2", "--dep", "3", "--dep", "4")
    cli("task", "pass", "1")
    cli("task", "fail", "2", "--reason", "tests red")
    cli("claim", "3", "--agent", "bob")
    for _ in range(3):
        cli("task", "fail", "4")
    conn = sqlite3.connect(repo / ".agents" / "agentkit.db")  # an edge to a task that is gone (edited by hand)
    conn.execute("INSERT INTO task_deps (task_id, dep_id) VALUES (5, 12)")
    conn.commit()
    conn.close()
    shown = cli("task", "show", "5", "--json").json
    assert shown["status"] == "blocked" and shown["depends_on"] == [1, 2, 3, 4, 12]
    assert shown["waits_on"] == [{"id": 2, "name": "api", "status": "failing"},
                                 {"id": 3, "name": "ui", "status": "in_progress"},
                                 {"id": 4, "name": "flaky", "status": "dead"},
                                 {"id": 12, "name": None, "status": "missing"}]
    human = cli("task", "show", "5").out
    assert "waits_on     2 (failing: 'api'), 3 (in_progress: 'ui'), 4 (dead: 'flaky'), 12 (missing)\n" in human
    assert "blocked by dead task 4 (flaky)" in human
    held = cli("task", "show", "3")
    assert "claim        bob (fence 1) until " in held.out and "waits_on     \n" in held.out
    r = Repo(repo)  # failing task 2 is ready, so `task status` has no diagnosis to show: ask the core
    try:
        diag = {d["id"]: d for d in tasks.diagnose(r.store.conn)}
    finally:
        r.close()
    assert diag[5]["unmet"] == shown["waits_on"][:2], "task status and task show read the same rule"
    assert (diag[5]["dead"], diag[5]["missing"]) == ([4], [12])


def test_waits_on_empties_as_dependencies_pass_and_every_task_view_has_it(repo, cli):
    cli("task", "add", "a")
    added = cli("task", "add", "b", "--dep", "1", "--json").json
    assert added["waits_on"] == [{"id": 1, "name": "a", "status": "pending"}]
    assert cli("task", "pass", "1", "--json").json["waits_on"] == []
    assert cli("task", "show", "2", "--json").json["waits_on"] == []
    cli("task", "add", "c")
    assert cli("task", "dep", "add", "2", "3", "--json").json["waits_on"] == [{"id": 3, "name": "c",
                                                                                "status": "pending"}]
    assert cli("task", "dep", "rm", "2", "3", "--json").json["waits_on"] == []


# ---- task pass|fail|skip from inside an agent's environment ---------------------------------------------

def agent_env(claim: dict) -> dict:
    return {"AGENTKIT_TASK_ID": str(claim["task_id"]), "AGENTKIT_FENCE": str(claim["fence"])}


def state_of(cli) -> tuple:
    """Every task row and every claim: what a refused command must leave as it was."""
    return tasks_of(cli), [(c["task_id"], c["agent"], c["fence"]) for t in tasks_of(cli).values()
                           if (c := cli("task", "show", str(t["id"]), "--json").json["claim"])]


def test_an_agent_reports_its_own_outcome_from_its_environment(repo, cli):
    for name in ("a", "b", "c"):
        cli("task", "add", name)
    claim = cli("claim", "1", "--agent", "agent-1", "--json").json
    res = cli("task", "pass", "--json", env=agent_env(claim))
    assert res.code == 0, res.err
    assert res.json["id"] == 1 and res.json["status"] == "passing" and res.json["claim"] is None
    claim = cli("claim", "2", "--agent", "agent-2", "--json").json
    res = cli("task", "fail", "--reason", "tests red", "--json", env=agent_env(claim))
    assert res.code == 0 and (res.json["id"], res.json["status"], res.json["attempts"]) == (2, "failing", 1)
    claim = cli("claim", "3", "--agent", "agent-3", "--json").json
    res = cli("task", "skip", env=agent_env(claim))
    assert res.code == 0 and "skip_count   1" in res.out
    assert cli("task", "show", "3", "--json").json["status"] == "pending"


def test_a_zombie_agent_cannot_overwrite_the_new_holder(repo, cli):
    cli("task", "add", "a")
    zombie = cli("claim", "--agent", "old", "--json").json
    cli("release", zombie["claim_id"])
    cli("claim", "--agent", "new")
    before = state_of(cli)
    res = cli("task", "pass", "--json", env=agent_env(zombie))
    assert res.code == ExitCode.CONFLICT and "now held by new (fence 2)" in res.json["error"]["message"]
    no_traceback(res)
    assert state_of(cli) == before
    res = cli("task", "pass", "1", env=agent_env(zombie))  # the same task, named: still the agent's own fence
    assert res.code == ExitCode.CONFLICT and state_of(cli) == before
    res = cli("task", "pass", "--fence", "2", "--json", env=agent_env(zombie))  # --fence wins over the env
    assert res.code == 0 and res.json["status"] == "passing"


def test_an_explicit_other_task_does_not_borrow_the_environment_fence(repo, cli):
    cli("task", "add", "mine")
    cli("task", "add", "other")
    mine = cli("claim", "1", "--agent", "me", "--json").json
    res = cli("task", "pass", "2", "--json", env=agent_env(mine))  # fence 1 never held task 2
    assert res.code == 0 and res.json["id"] == 2 and res.json["status"] == "passing", res.err
    assert cli("task", "show", "1", "--json").json["claim"]["agent"] == "me", "the agent's own task untouched"
    res = cli("task", "pass", "2", env={"AGENTKIT_FENCE": "99"})  # a fence without a task names no task
    assert res.code == 0, res.err


@pytest.mark.parametrize(("args", "env", "expected"), [
    (("task", "pass"), {}, "`task pass` needs a task id: none given and AGENTKIT_TASK_ID is not set"),
    (("task", "fail"), {"AGENTKIT_FENCE": "1"}, "`task fail` needs a task id"),
    (("task", "skip"), {"AGENTKIT_TASK_ID": ""}, "`task skip` needs a task id"),
    (("task", "pass"), {"AGENTKIT_TASK_ID": "one"}, "AGENTKIT_TASK_ID='one' is not a task id"),
    (("task", "pass"), {"AGENTKIT_TASK_ID": "-1"}, "AGENTKIT_TASK_ID='-1' is not a task id"),
    (("task", "pass"), {"AGENTKIT_TASK_ID": "²"}, "AGENTKIT_TASK_ID='²' is not a task id"),
    (("task", "pass"), {"AGENTKIT_TASK_ID": "1", "AGENTKIT_FENCE": "x"}, "AGENTKIT_FENCE='x' is not a fence"),
    (("task", "pass", "1"), {"AGENTKIT_TASK_ID": "1", "AGENTKIT_FENCE": "0"}, "AGENTKIT_FENCE='0' is not a fence"),
    (("task", "pass"), {"AGENTKIT_TASK_ID": "1", "AGENTKIT_FENCE": str(2**64)}, "is not a fence"),
])
def test_no_task_or_a_malformed_environment_is_a_usage_error(repo, cli, args, env, expected):
    cli("task", "add", "a")
    cli("claim", "--agent", "me")
    before = state_of(cli)
    res = cli(*args, "--json", env=env)
    assert res.code == ExitCode.USAGE, (res.code, res.err)
    no_traceback(res)
    assert expected in res.json["error"]["message"] and expected in res.err
    assert res.json["error"]["hint"]
    assert state_of(cli) == before, "nothing changed"


def test_reset_still_needs_its_task_id(repo, cli):
    cli("task", "add", "a")
    res = cli("task", "reset", env={"AGENTKIT_TASK_ID": "1"})
    assert res.code == ExitCode.USAGE and "Missing argument" in res.err
    no_traceback(res)
