"""The task graph: ordering, the ready set, cycles, imports, outcomes, dead tasks and the diagnosis."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit import claims, tasks
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
    claims.settle(r, 1, "pass")
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
    claims.settle(r, 1, "pass")
    ready = tasks.ready(r)
    assert ids(ready) == [5, 2, 3], "all score 100: ties broken by priority (900 first), then id"
    claims.settle(r, 2, "skip")
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


def test_thousand_deep_chain(r, tmp_path):
    chain = [{"id": i, "name": f"t{i}", "depends_on": [i - 1] if i > 1 else []} for i in range(1, 1001)]
    (tmp_path / "chain.json").write_text(json.dumps(chain))
    tasks.import_file(r, tmp_path / "chain.json")
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
    assert claim.code == ExitCode.NOTHING_READY and "waits on 1 (dead after" in claim.json["error"]["message"]
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
        deps = tasks.deps_map(conn)
        assert tasks.find_cycle(list(range(1, 13)), deps) is None
        for a, b in edges:  # every refusal was a real cycle (or a self-loop)
            if (a, b) not in accepted:
                assert a == b or tasks.find_path(deps, b, a) is not None
        for t in passing:
            claims.settle(r, t, "pass")
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


def _from_scratch(conn) -> tuple[list[tuple], dict[int, int]]:
    """The ready set and every task's dependents, recomputed naively from the raw rows and edges."""
    rows = {r["id"]: dict(r) for r in conn.execute("SELECT id, status, claim_id, priority, skip_count FROM tasks")}
    deps: dict[int, set[int]] = {}
    for task_id, dep_id in conn.execute("SELECT task_id, dep_id FROM task_deps"):
        deps.setdefault(task_id, set()).add(dep_id)

    def upstream(task_id: int, seen: set[int]) -> set[int]:
        for d in deps.get(task_id, ()):
            if d not in seen:
                seen.add(d)
                upstream(d, seen)
        return seen

    dependents = dict.fromkeys(rows, 0)
    for task_id in rows:
        for d in upstream(task_id, set()):
            dependents[d] += 1
    ready = [t for t in rows.values() if t["status"] in ("pending", "failing") and t["claim_id"] is None
             and all(d in rows and rows[d]["status"] == "passing" for d in deps.get(t["id"], ()))]
    scored = [(t["id"], (1000 - t["priority"]) + 100 * dependents[t["id"]] - 10 * t["skip_count"]) for t in ready]
    scored.sort(key=lambda p: (-p[1], rows[p[0]]["priority"], p[0]))
    return scored, dependents


add_op = st.tuples(st.just("add"), st.integers(0, 2000), st.lists(st.integers(1, 10), max_size=3))
ops = st.lists(add_op, min_size=3, max_size=8).flatmap(lambda adds: st.lists(st.one_of(
    add_op,
    st.tuples(st.just("dep_add"), st.integers(1, 10), st.integers(1, 10)),
    st.tuples(st.just("dep_rm"), st.integers(1, 10), st.integers(1, 10)),
    st.tuples(st.sampled_from(["pass", "fail", "skip", "reset"]), st.integers(1, 10), st.none()),
    st.tuples(st.just("claim"), st.integers(0, 10), st.none()),
    st.tuples(st.just("release"), st.sampled_from([None, "pass", "fail", "skip"]), st.none()),
), min_size=5, max_size=40).map(lambda rest: adds + rest))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_kept_scores_and_readiness_equal_a_recomputation_after_any_sequence(repo, ops):
    r = Repo(repo)
    try:
        conn = r.store.conn
        for table in ("tasks", "task_deps", "claims", "task_scoring"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'tasks'")
        held: list[str] = []
        for op, a, b in ops:
            n = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]

            def pick(i: int, n: int = n) -> int:  # ids among the tasks that exist, so most steps do something
                return 1 + i % n if n else i
            try:
                if op == "add":
                    tasks.add(r, f"t{a}", priority=a, deps=[pick(d) for d in b])
                elif op == "dep_add":
                    tasks.dep_add(r, pick(a), pick(b))
                elif op == "dep_rm":
                    tasks.dep_rm(r, pick(a), pick(b))
                elif op == "claim":
                    held.append(claims.claim(r, agent=f"a{len(held)}", task_id=pick(a) if a else None)["claim_id"])
                elif op == "release":
                    if held:
                        claims.release(r, held.pop(0), outcome=a)
                else:
                    claims.settle(r, pick(a), op)
            except AgentkitError as exc:
                assert exc.code in (ExitCode.USAGE, ExitCode.NOT_FOUND, ExitCode.CONFLICT, ExitCode.NOTHING_READY)
            expected, dependents = _from_scratch(conn)
            assert [(t["id"], t["score"]) for t in tasks.ready(r)] == expected, f"after {op} {a} {b}"
            assert dict(conn.execute("SELECT id, dependents FROM tasks").fetchall()) == dependents
    finally:
        r.close()


def test_the_ready_index_is_the_ready_test_and_a_claim_reads_it(r):
    from agentkit.tasks.ready import _ORDER, _READY_ROWS
    from agentkit.tasks.table import READY_WHERE

    sql = r.store.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks_ready'").fetchone()[0]
    assert sql.endswith(f"WHERE {READY_WHERE}"), "schema m004 and tasks.table.READY_WHERE must say the same"
    plan = " ".join(row[-1] for row in r.store.conn.execute(
        f"EXPLAIN QUERY PLAN SELECT id FROM {_READY_ROWS} ORDER BY {_ORDER} LIMIT 1"))
    assert "USING INDEX tasks_ready" in plan and "TEMP B-TREE" not in plan, plan
