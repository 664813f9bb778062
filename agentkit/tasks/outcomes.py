"""What happens to a task and its dependents when it passes, fails, is skipped, reset, or dies."""

import time

from agentkit import events
from agentkit.errors import conflict, usage
from agentkit.tasks import dag, table

OUTCOMES = ("pass", "fail", "skip", "reset")


def block_dependents(conn, task_id: int, name: str) -> list[int]:
    """A dead task blocks every open task downstream of it."""
    blocked = []
    for dep_id in dag.downstream(table.deps_map(conn), task_id):
        row = conn.execute("SELECT status FROM tasks WHERE id = ?", (dep_id,)).fetchone()
        if row and row[0] in table.OPEN_STATUSES:
            table.set_status(conn, dep_id, "blocked", f"blocked by dead task {task_id} ({name})")
            blocked.append(dep_id)
    if blocked:
        events.record(conn, "task.blocked", str(task_id), dependents=blocked)
    return blocked


def unblock(conn) -> list[int]:
    """Blocked tasks with no dead task upstream any more go back to pending."""
    deps = table.deps_map(conn)
    dead = {r[0] for r in conn.execute("SELECT id FROM tasks WHERE status = 'dead'")}
    freed = []
    for (task_id,) in conn.execute("SELECT id FROM tasks WHERE status = 'blocked'").fetchall():
        if not dag.reaches(deps, task_id, dead):
            table.set_status(conn, task_id, "pending")
            freed.append(task_id)
    return freed


def record_failure(repo, conn, task: dict, reason: str | None, kind: str, retry_as: str = "failing") -> dict:
    """One failed attempt: `retry_as` (claimable again), or dead at max_attempts with every dependent blocked."""
    attempts = task["attempts"] + 1
    if attempts >= repo.config["tasks.max_attempts"]:
        table.set_status(conn, task["id"], "dead", reason or f"failed {attempts} times", attempts=attempts,
                         claim_id=None)
        blocked = block_dependents(conn, task["id"], task["name"])
        events.record(conn, "task.dead", str(task["id"]), attempts=attempts, reason=reason, via=kind)
        return {"status": "dead", "attempts": attempts, "blocked": blocked}
    table.set_status(conn, task["id"], retry_as, reason, attempts=attempts, claim_id=None)
    events.record(conn, "task.failed", str(task["id"]), attempts=attempts, reason=reason, via=kind)
    return {"status": retry_as, "attempts": attempts, "blocked": []}


def apply_outcome(repo, conn, task_id: int, outcome: str, reason: str | None = None) -> dict:
    """pass, fail, skip or reset a task inside the caller's transaction (claims.settle ends its claim); returns
    what the outcome changed beside the task (`unblocked`, a failure's `blocked`), for the caller to show."""
    if outcome not in OUTCOMES:
        raise usage(f"unknown outcome {outcome!r}", f"choose one of: {', '.join(OUTCOMES)}")
    task = table.get(conn, task_id)
    extra: dict = {}
    if outcome == "pass":
        table.set_status(conn, task_id, "passing", reason, claim_id=None, verified_at=time.time())
        extra = {"unblocked": unblock(conn)} if task["status"] == "dead" else {}
        events.record(conn, "task.passed", str(task_id), reason=reason, **extra)
    elif outcome == "fail":
        extra = record_failure(repo, conn, task, reason, "task fail")
    elif outcome == "skip":
        if task["status"] in ("passing", "dead", "blocked"):
            raise conflict(f"task {task_id} is {task['status']}; only open work can be skipped")
        table.set_status(conn, task_id, "pending", reason, claim_id=None, skip_count=task["skip_count"] + 1)
        events.record(conn, "task.skipped", str(task_id), skip_count=task["skip_count"] + 1, reason=reason)
    else:
        table.set_status(conn, task_id, "pending", reason, claim_id=None, attempts=0)
        extra = {"unblocked": unblock(conn)}
        events.record(conn, "task.reset", str(task_id), was=task["status"], reason=reason, **extra)
    return extra


def put_back(conn, task_id: int, status: str, reason: str | None = None) -> None:
    """A claim ended without a verdict: the task returns to `status`, its reason kept unless one is given."""
    keep = table.get(conn, task_id)["reason"]
    table.set_status(conn, task_id, status, reason or keep, claim_id=None)


def regressed(repo, conn, task_id: int, reason: str) -> dict:
    """A passing task failed its re-verification: back to work as failing, as one failed attempt, so a task that
    keeps regressing ends dead (its dependents blocked) instead of going round for ever."""
    return record_failure(repo, conn, table.get(conn, task_id), reason, "regression")
