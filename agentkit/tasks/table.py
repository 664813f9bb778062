"""The tasks and task_deps tables: rows, the one status writer, and the readiness and scores derived from them.

Derived columns, kept in the same transaction as the change that affects them:
- `unmet_deps`: dependencies that are not passing (a missing one counts), so readiness is one indexed test;
- `dependents`: distinct tasks depending on the task, directly or transitively (a scoring input);
- `score` / `score_parts`: NULL until the ready task is scored (see ready.py); any change to the row clears them.
"""

import json
import sqlite3
import time

from agentkit.errors import not_found
from agentkit.tasks import dag

STATUSES = ("pending", "in_progress", "passing", "failing", "blocked", "dead")
READY_STATUSES = ("pending", "failing")  # failing: a regression (or a failed attempt) left work to redo
FAILED_STATUSES = ("failing", "dead")  # what a retry (a reset with the attempts back) is for
OPEN_STATUSES = (*READY_STATUSES, "blocked")  # what a dead dependency blocks

# The ready test, written once: the partial index tasks_ready (schema m004) is defined by the same text.
READY_WHERE = (f"status IN ({', '.join(repr(s) for s in READY_STATUSES)}) AND claim_id IS NULL "
               "AND unmet_deps = 0")
DERIVED = ("unmet_deps", "dependents", "score", "score_parts")  # internal columns, not part of a task's view


def view(row) -> dict:
    """A task as commands show it (JSON columns decoded, derived columns left out)."""
    t = {k: row[k] for k in row.keys() if k not in DERIVED}
    t["steps"] = json.loads(t["steps"])
    t["meta"] = json.loads(t["meta"])
    return t


def get(conn: sqlite3.Connection, task_id: int) -> dict:
    row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise not_found(f"unknown task {task_id}", "see `agentkit task list`")
    return view(row)


def deps_map(conn: sqlite3.Connection) -> dag.Deps:
    out: dag.Deps = {}
    for task_id, dep_id in conn.execute("SELECT task_id, dep_id FROM task_deps"):
        out.setdefault(task_id, set()).add(dep_id)
    return out


def insert(conn, name: str, priority: int, description: str, category: str, steps: list, meta: dict,
           status: str = "pending", task_id: int | None = None) -> int:
    """A new row without dependencies (add_edges gives it those)."""
    now = time.time()
    cur = conn.execute(
        "INSERT INTO tasks (id, name, description, category, steps, priority, status, meta, created_at, updated_at,"
        " verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, name, description, category, json.dumps(steps), priority, status, json.dumps(meta), now, now,
         now if status == "passing" else None))
    return cur.lastrowid


def add_edges(conn, edges: list[tuple[int, int]]) -> int:
    """Insert (task, dep) edges that the caller checked for cycles; unmet_deps follows. Returns how many were new."""
    added = 0
    for task_id, dep_id in edges:
        if conn.execute("INSERT OR IGNORE INTO task_deps (task_id, dep_id) VALUES (?, ?)", (task_id, dep_id)).rowcount:
            added += 1
            conn.execute("UPDATE tasks SET unmet_deps = unmet_deps + 1 WHERE id = ? AND NOT EXISTS "
                         "(SELECT 1 FROM tasks u WHERE u.id = ? AND u.status = 'passing')", (task_id, dep_id))
    return added


def remove_edge(conn, task_id: int, dep_id: int) -> bool:
    if not conn.execute("DELETE FROM task_deps WHERE task_id = ? AND dep_id = ?", (task_id, dep_id)).rowcount:
        return False
    conn.execute("UPDATE tasks SET unmet_deps = unmet_deps - 1 WHERE id = ? AND NOT EXISTS "
                 "(SELECT 1 FROM tasks u WHERE u.id = ? AND u.status = 'passing')", (task_id, dep_id))
    return True


def set_status(conn, task_id: int, status: str, reason: str | None = None, **extra) -> None:
    """The one writer of a task's status (besides the claim's take, pending/failing -> in_progress, which never
    changes whether it passes): its dependents' unmet_deps follow, its score is cleared."""
    old = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    cols = "".join(f", {k} = ?" for k in extra)
    conn.execute(f"UPDATE tasks SET status = ?, reason = ?, updated_at = ?, score = NULL{cols} WHERE id = ?",
                 (status, reason, time.time(), *extra.values(), task_id))
    if old is not None and (old[0] == "passing") != (status == "passing"):
        conn.execute(f"UPDATE tasks SET unmet_deps = unmet_deps {'-' if status == 'passing' else '+'} 1 "
                     "WHERE id IN (SELECT task_id FROM task_deps WHERE dep_id = ?)", (task_id,))


def count_new_dependent(conn, task_id: int) -> None:
    """A new task depends on task_id's upstream: each task there has one more distinct dependent."""
    conn.execute("""
        WITH RECURSIVE up(id) AS (SELECT dep_id FROM task_deps WHERE task_id = ?
                                  UNION SELECT d.dep_id FROM task_deps d JOIN up ON d.task_id = up.id)
        UPDATE tasks SET dependents = dependents + 1, score = NULL WHERE id IN (SELECT id FROM up)""", (task_id,))


def refresh_dependents(conn, deps: dag.Deps | None = None) -> None:
    """Recount every task's dependents after the graph changed (import, dep add/rm); only changed rows are
    written (and their scores cleared)."""
    deps = deps_map(conn) if deps is None else deps
    stored = dict(conn.execute("SELECT id, dependents FROM tasks").fetchall())
    counts = dag.dependents_counts(list(stored), deps)
    changed = [(n, task_id) for task_id, n in counts.items() if stored[task_id] != n]
    conn.executemany("UPDATE tasks SET dependents = ?, score = NULL WHERE id = ?", changed)


def rebuild(conn) -> None:
    """Every derived column from scratch (a database from before they existed, or one edited by hand)."""
    conn.execute("UPDATE tasks SET score = NULL, unmet_deps = (SELECT count(*) FROM task_deps d "
                 "LEFT JOIN tasks u ON u.id = d.dep_id WHERE d.task_id = tasks.id AND "
                 "(u.id IS NULL OR u.status != 'passing'))")
    refresh_dependents(conn)


# ---- reading --------------------------------------------------------------------------------------------

def list_tasks(conn, status: str | None = None) -> list[dict]:
    sql = "SELECT * FROM tasks" + (" WHERE status = ?" if status else "") + " ORDER BY id"
    return [view(r) for r in conn.execute(sql, (status,) if status else ())]


def show_in(conn, task_id: int) -> dict:
    """A task with its direct dependencies, its dependents, and the dependencies it waits on."""
    from agentkit.tasks.diagnosis import waits_on  # diagnosis reads this module: imported here to break the cycle

    t = get(conn, task_id)
    t["depends_on"] = [r[0] for r in conn.execute("SELECT dep_id FROM task_deps WHERE task_id = ? ORDER BY 1",
                                                  (task_id,))]
    t["required_by"] = [r[0] for r in conn.execute("SELECT task_id FROM task_deps WHERE dep_id = ? ORDER BY 1",
                                                  (task_id,))]
    t["waits_on"] = waits_on(conn, task_id)
    return t


def count_ready(conn) -> int:
    return conn.execute(f"SELECT count(*) FROM tasks WHERE {READY_WHERE}").fetchone()[0]


def counts(conn) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for st, n in conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"):
        out[st] = n
    return out


def graph_of(conn) -> dict:
    nodes = [{"id": r[0], "name": r[1], "status": r[2]} for r in
             conn.execute("SELECT id, name, status FROM tasks ORDER BY id")]
    edges = [[r[0], r[1]] for r in conn.execute("SELECT task_id, dep_id FROM task_deps ORDER BY 1, 2")]
    return {"tasks": nodes, "edges": edges}


def least_recently_verified(conn, exclude: set[int], limit: int) -> list[int]:
    """Passing tasks to re-verify, oldest verification first, skipping those in `exclude`."""
    out = []
    for (task_id,) in conn.execute("SELECT id FROM tasks WHERE status = 'passing' "
                                   "ORDER BY verified_at IS NOT NULL, verified_at, id"):
        if task_id not in exclude:
            out.append(task_id)
            if len(out) == limit:
                break
    return out


def mark_verified(conn, task_id: int) -> None:
    now = time.time()
    conn.execute("UPDATE tasks SET verified_at = ?, updated_at = ? WHERE id = ?", (now, now, task_id))
