"""The task graph: ordering, the ready set, cycles, imports, outcomes, dead tasks and the diagnosis."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit import tasks
from agentkit.errors import AgentkitError, ExitCode
from agentkit.repo import Repo
from tests.conftest import write_plugin


@pytest.fixture
def r(repo):
    handle = Repo(repo)
    yield handle
    handle.close()


def ids(rows):
    return [t["id"] for t in rows]


def test_ready_set_of_the_issue_example(r):
    for name in ("1", "2", "3", "4"):
        tasks.add(r, name)
    tasks.dep_add(r, 3, 1)
    tasks.dep_add(r, 4, 2)
    tasks.set_outcome(r, 1, "pass")
    assert sorted(ids(tasks.ready(r))) == [2, 3]


def test_chain_and_diamond_ordering_and_score_parts(r):
    # diamond: 4 depends on 2 and 3, both depend on 1; a lone task 5 with a better priority
    for name in ("base", "left", "right", "top"):
        tasks.add(r, name)
    tasks.add(r, "lone", priority=900)
    for task_id, dep in ((2, 1), (3, 1), (4, 2), (4, 3)):
        tasks.dep_add(r, task_id, dep)
    ready = tasks.ready(r)
    assert ids(ready) == [1, 5]
    assert ready[0]["score"] == 300 and ready[0]["score_parts"] == {"priority": 0, "dependents": 300, "skips": 0}
    assert ready[1]["score"] == 100
    tasks.set_outcome(r, 1, "pass")
    ready = tasks.ready(r)
    assert ids(ready) == [5, 2, 3], "all score 100: ties broken by priority (900 first), then id"
    tasks.set_outcome(r, 2, "skip")
    ready = tasks.ready(r)
    assert ids(ready) == [5, 3, 2] and ready[2]["score"] == 90 and ready[2]["score_parts"]["skips"] == -10


def test_cycle_is_refused_with_its_path(repo, cli):
    for name in ("a", "b", "c"):
        cli("task", "add", name)
    cli("task", "dep", "add", "2", "1")
    cli("task", "dep", "add", "3", "2")
    res = cli("task", "dep", "add", "1", "3", "--json")
    assert res.code == ExitCode.USAGE
    assert "1 → 3 → 2 → 1" in res.json["error"]["message"]
    assert cli("task", "show", "1", "--json").json["depends_on"] == []


def test_self_and_unknown_dependencies_are_refused(repo, cli):
    cli("task", "add", "a")
    res = cli("task", "dep", "add", "1", "1", "--json")
    assert res.code == ExitCode.USAGE and "itself" in res.json["error"]["message"]
    res = cli("task", "add", "b", "--dep", "42", "--json")
    assert res.code == ExitCode.NOT_FOUND and "unknown task 42" in res.json["error"]["message"]
    assert [t["name"] for t in cli("task", "list", "--json").json["tasks"]] == ["a"], "nothing half-added"


def test_thousand_deep_chain(r):
    r.store.conn.execute("BEGIN IMMEDIATE")
    for i in range(1, 1001):
        tasks._insert(r.store.conn, f"t{i}", 1000, "", "", [], {})
        if i > 1:
            r.store.conn.execute("INSERT INTO task_deps VALUES (?, ?)", (i, i - 1))
    r.store.conn.execute("COMMIT")
    ready = tasks.ready(r)
    assert ids(ready) == [1] and ready[0]["score_parts"]["dependents"] == 99_900
    with pytest.raises(AgentkitError) as exc:
        tasks.dep_add(r, 1, 1000)
    assert exc.value.code == ExitCode.USAGE and exc.value.message.endswith("1 → 1000 → 999 → " + " → ".join(
        str(i) for i in range(998, 0, -1)))


def test_import_yaml_with_names_and_ids(repo, cli, tmp_path):
    f = tmp_path / "tasks.yaml"
    f.write_text("""
- id: 10
  name: schema
  priority: 1
- name: api
  depends_on: [schema]
  steps: [write handler, add test]
- name: ui
  depends_on: [api, 10]
  category: frontend
- name: docs
  passes: true
""")
    res = cli("task", "import", str(f), "--json")
    assert res.code == 0, res.err
    assert res.json["imported"] == 4 and res.json["ids"][0] == 10
    ui = cli("task", "show", str(res.json["ids"][2]), "--json").json
    assert sorted(ui["depends_on"]) == sorted([10, res.json["ids"][1]]) and ui["category"] == "frontend"
    assert cli("task", "list", "--status", "passing", "--json").json["tasks"][0]["name"] == "docs"
    assert ids(cli("task", "ready", "--json").json["tasks"]) == [10]


def test_import_is_all_or_nothing_and_lists_every_problem(repo, cli, tmp_path):
    cli("task", "add", "existing")
    f = tmp_path / "bad.json"
    f.write_text(json.dumps([
        {"name": "ok"},
        {"name": "needs-ghost", "depends_on": ["ghost"]},
        {"priority": 3},
        {"name": "bad-prio", "priority": "high"},
        {"id": 1, "name": "taken id"},
        {"name": "x", "depends_on": [99]},
    ]))
    res = cli("task", "import", str(f), "--json")
    assert res.code == ExitCode.USAGE
    msg = res.json["error"]["message"]
    assert msg.index("entry 2") < msg.index("entry 3") < msg.index("entry 6")
    for expected in ("5 problem", "entry 2 ('needs-ghost'): depends on unknown task 'ghost'", "entry 3: needs a name",
                     "entry 4 ('bad-prio'): priority must be an integer", "entry 5 ('taken id'): id 1 already exists",
                     "entry 6 ('x'): depends on unknown task id 99"):
        assert expected in msg, msg
    assert [t["name"] for t in cli("task", "list", "--json").json["tasks"]] == ["existing"]


def test_import_refuses_a_cycle_in_the_file(repo, cli, tmp_path):
    f = tmp_path / "cycle.json"
    f.write_text(json.dumps({"tasks": [{"id": 1, "name": "a", "depends_on": [2]},
                                       {"id": 2, "name": "b", "depends_on": ["a"]}]}))
    res = cli("task", "import", str(f), "--json")
    assert res.code == ExitCode.USAGE and "1 → 2 → 1" in res.json["error"]["message"]
    assert cli("task", "list", "--json").json["tasks"] == []


def test_dead_task_blocks_dependents_and_reset_brings_them_back(repo, cli):
    cli("task", "add", "flaky")
    cli("task", "add", "child", "--dep", "1")
    cli("task", "add", "grandchild", "--dep", "2")
    cli("task", "add", "other")
    for attempt in (1, 2):
        res = cli("task", "fail", "1", "--reason", f"boom {attempt}", "--json").json
        assert res["status"] == "failing" and res["attempts"] == attempt
    res = cli("task", "fail", "1", "--json")
    assert res.json["status"] == "dead" and res.json["blocked"] == [2, 3]
    child = cli("task", "show", "3", "--json").json
    assert child["status"] == "blocked" and "dead task 1 (flaky)" in child["reason"]
    cli("task", "pass", "4")
    status = cli("task", "status", "--json").json
    assert status["ready"] == 0 and status["stuck"] is True
    diag = {d["id"]: d for d in status["diagnosis"]}
    assert diag[2]["dead"] == [1] and diag[1]["status"] == "dead"
    claim = cli("claim", "--agent", "a", "--json")
    assert claim.code == ExitCode.NOTHING_READY and "dead deps [1]" in claim.json["error"]["message"]
    reset = cli("task", "reset", "1", "--json").json
    assert reset["status"] == "pending" and reset["attempts"] == 0 and sorted(reset["unblocked"]) == [2, 3]
    assert ids(cli("task", "ready", "--json").json["tasks"]) == [1]


def test_unknown_ids_and_bad_status(repo, cli):
    assert cli("task", "show", "9", "--json").code == ExitCode.NOT_FOUND
    assert cli("task", "pass", "9", "--json").code == ExitCode.NOT_FOUND
    assert cli("task", "list", "--status", "done", "--json").code == ExitCode.USAGE
    assert cli("task", "dep", "rm", "9", "1", "--json").code == ExitCode.NOT_FOUND


def test_graph_json_and_dot(repo, cli):
    cli("task", "add", "a")
    cli("task", "add", "b", "--dep", "1")
    assert cli("task", "graph", "--json").json["edges"] == [[2, 1]]
    dot = cli("task", "graph", "--dot").out
    assert dot.startswith("digraph tasks {") and "t2 -> t1;" in dot


def test_snapshot_has_a_tasks_section(repo, cli):
    cli("task", "add", "a")
    snap = cli("snapshot", "--json").json
    assert snap["tasks"]["counts"]["pending"] == 1 and snap["tasks"]["ready"] == 1


# ---- properties ---------------------------------------------------------------------------------------

edges = st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), max_size=40)
passing = st.sets(st.integers(1, 12))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edges=edges, passing=passing)
def test_no_cycle_is_ever_accepted_and_ready_means_deps_pass(repo, edges, passing):
    r = Repo(repo)
    try:
        conn = r.store.conn
        conn.execute("DELETE FROM tasks")
        conn.execute("DELETE FROM task_deps")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'tasks'")
        for i in range(1, 13):
            tasks.add(r, f"t{i}")
        accepted = set()
        for a, b in edges:
            try:
                tasks.dep_add(r, a, b)
                accepted.add((a, b))
            except AgentkitError as exc:
                assert exc.code == ExitCode.USAGE
        deps = tasks._deps(conn)
        assert tasks.find_cycle(list(range(1, 13)), deps) is None
        for a, b in edges:  # every refusal was a real cycle (or a self-loop)
            if (a, b) not in accepted:
                assert a == b or tasks.find_path(deps, b, a) is not None
        for t in passing:
            tasks.set_outcome(r, t, "pass")
        expected = {t for t in range(1, 13) if t not in passing and deps.get(t, set()) <= passing}
        assert set(ids(tasks.ready(r))) == expected
    finally:
        r.close()


def test_import_lists_duplicate_ids_and_cycles_with_other_problems(repo, cli, tmp_path):
    f = tmp_path / "dups.json"
    f.write_text(json.dumps([{"id": 30, "name": "a", "depends_on": [31]}, {"id": 32, "name": "b"},
                             {"id": 31, "name": "c", "depends_on": ["a"]}, {"name": "d", "priority": "x"},
                             {"id": 32, "name": "e"}]))
    res = cli("task", "import", str(f), "--json")
    assert res.code == ExitCode.USAGE
    msg = res.json["error"]["message"]
    assert "entry 5 ('e'): id 32 is used twice" in msg and "priority must be an integer" in msg
    assert "cycle refused: 30 → 31 → 30" in msg


def test_passing_a_dead_task_unblocks_its_dependents(repo, cli):
    cli("task", "add", "a")
    cli("task", "add", "b", "--dep", "1")
    for _ in range(3):
        cli("task", "fail", "1")
    assert cli("task", "show", "2", "--json").json["status"] == "blocked"
    res = cli("task", "pass", "1", "--json").json
    assert res["unblocked"] == [2] and res["required_by"] == [2]
    assert [t["id"] for t in cli("task", "ready", "--json").json["tasks"]] == [2]


def test_a_scoring_plugin_reorders_and_a_broken_one_is_reported(repo, cli, tmp_path):
    source = ("from agentkit.hookspecs import hookimpl\n\n@hookimpl\ndef task_scores(tasks):\n"
              "    return [{'score': 1 if t['category'] == 'bug' else 0, 'parts': {}} for t in tasks]\n")
    env = write_plugin(tmp_path, "bugs_first", source)
    cli("task", "add", "feature", "--priority", "1")
    cli("task", "add", "bug", "--category", "bug")
    assert [t["name"] for t in cli("task", "ready", "--json", env=env).json["tasks"]] == ["bug", "feature"]
    assert [t["name"] for t in cli("task", "ready", "--json").json["tasks"]] == ["feature", "bug"]
    write_plugin(tmp_path, "bugs_first",
                 "from agentkit.hookspecs import hookimpl\n\n@hookimpl\ndef task_scores(tasks):\n    return []\n")
    res = cli("task", "ready", "--json", env=env)
    assert res.code == ExitCode.FAILED and "task_scores plugin" in res.json["error"]["message"]
