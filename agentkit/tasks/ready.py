"""The ready set: scores kept in the tasks table, filled in for ready tasks that have none, and the take of
the best ready task (one indexed read and one conditional update inside the caller's transaction)."""

import json
import time

from agentkit.errors import AgentkitError
from agentkit.tasks import table

_SCORE_INPUTS = "id, name, priority, skip_count, attempts, status, category, meta, dependents"
_ORDER = "score DESC, priority, id"  # the order of the tasks_ready index
_READY_ROWS = f"tasks INDEXED BY tasks_ready WHERE {table.READY_WHERE}"  # no sort: the index is the order


def _signature(repo) -> str:
    """Which plugins score: stored scores from another set of plugins are stale."""
    return ",".join(sorted(impl.plugin_name for impl in repo.hook.task_scores.get_hookimpls()))


def _score_missing(repo, conn) -> None:
    """Give every ready task without a score its score from the task_scores hook (one call for all of them)."""
    signature = _signature(repo)
    row = conn.execute("SELECT signature FROM task_scoring WHERE id = 1").fetchone()
    if row is None:  # derived columns never built (a new or upgraded database)
        table.rebuild(conn)
    elif row[0] != signature:
        conn.execute("UPDATE tasks SET score = NULL WHERE score IS NOT NULL")
    if row is None or row[0] != signature:
        conn.execute("INSERT INTO task_scoring (id, signature) VALUES (1, ?) "
                     "ON CONFLICT(id) DO UPDATE SET signature = excluded.signature", (signature,))
    rows = [dict(r) for r in conn.execute(f"SELECT {_SCORE_INPUTS} FROM tasks WHERE {table.READY_WHERE} "
                                          "AND score IS NULL")]
    if not rows:
        return
    for r in rows:
        r["meta"] = json.loads(r["meta"])
    scores = repo.hook.task_scores(tasks=rows)
    if not isinstance(scores, list) or len(scores) != len(rows):
        raise AgentkitError(f"the task_scores plugin answered {len(scores) if isinstance(scores, list) else scores!r}"
                            f" scores for {len(rows)} tasks", "fix the plugin, or disable it with AGENTKIT_PLUGINS")
    try:
        values = [(int(s["score"]), json.dumps(s["parts"]), r["id"]) for r, s in zip(rows, scores, strict=True)]
    except (TypeError, KeyError, ValueError) as exc:
        raise AgentkitError(f"the task_scores plugin answered a score that is not {{'score': int, 'parts': {{}}}}: "
                            f"{exc!r}", "fix the plugin, or disable it with AGENTKIT_PLUGINS") from None
    conn.executemany("UPDATE tasks SET score = ?, score_parts = ? WHERE id = ?", values)


def scored(repo, conn) -> list[dict]:
    """The ready set, best first: score desc, then priority, then id; each row adds score, score_parts and
    dependents. Call inside a write transaction (missing scores are written)."""
    _score_missing(repo, conn)
    out = []
    for r in conn.execute(f"SELECT * FROM {_READY_ROWS} ORDER BY {_ORDER}"):
        t = table.view(r)
        t.update(dependents=r["dependents"], score=r["score"], score_parts=json.loads(r["score_parts"]))
        out.append(t)
    return out


def ready(repo) -> list[dict]:
    with repo.store.tx() as conn:
        return scored(repo, conn)


def take(repo, conn, claim_id: str, task_id: int | None = None) -> dict | None:
    """Mark the best ready task (or task_id, if it is ready) in_progress under claim_id. Returns its id,
    previous status, score and score_parts, or None when there is none. Call inside the claim transaction."""
    _score_missing(repo, conn)
    sql = f"SELECT id, status, score, score_parts FROM {_READY_ROWS}"
    row = conn.execute(sql + (" AND id = ?" if task_id is not None else f" ORDER BY {_ORDER} LIMIT 1"),
                       (task_id,) if task_id is not None else ()).fetchone()
    if row is None:
        return None
    won = conn.execute("UPDATE tasks SET status = 'in_progress', claim_id = ?, score = NULL, updated_at = ? "
                       f"WHERE id = ? AND {table.READY_WHERE}", (claim_id, time.time(), row["id"])).rowcount
    if won != 1:  # cannot happen inside BEGIN IMMEDIATE; refuse rather than double-assign
        return None
    return {"id": row["id"], "prior_status": row["status"], "score": row["score"],
            "score_parts": json.loads(row["score_parts"])}
