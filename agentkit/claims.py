"""Claims on tasks: one conditional UPDATE decides each, leases expire, fences stop zombie agents."""

import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agentkit import durations, events, tasks
from agentkit.errors import AgentkitError, ExitCode, conflict, not_found, usage

SCHEMA_VERSION = 1


def _lease(repo, lease: str | None) -> float:
    if lease:
        return durations.parse(lease, "--lease")
    return durations.parse(repo.config["claims.lease"], f"claims.lease (from {repo.config.sources['claims.lease']})")


def worktree_hint(task: dict) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", task["name"].lower()).strip("-")
    return f"task-{task['id']}" + (f"-{words}"[:40].rstrip("-") if words else "")


def _view(conn, claim: sqlite3.Row | dict) -> dict:
    c = dict(claim)
    task = tasks.show_in(conn, c["task_id"])
    task.pop("claim", None)
    return {"schema_version": SCHEMA_VERSION, **c, "task": task, "worktree": worktree_hint(task)}


def expire_leases(repo, conn, now: float | None = None) -> list[dict]:
    """Expired leases: the claim ends as expired; a work task goes back to the pool with attempts + 1."""
    now = now or time.time()
    expired = []
    for c in conn.execute("SELECT * FROM claims WHERE state = 'active' AND lease_expires_at < ?", (now,)).fetchall():
        conn.execute("UPDATE claims SET state = 'expired', ended_at = ? WHERE claim_id = ?", (now, c["claim_id"]))
        item = {"claim_id": c["claim_id"], "task_id": c["task_id"], "agent": c["agent"], "kind": c["kind"]}
        if c["kind"] == "work":
            task = tasks.show_in(conn, c["task_id"])
            if task["status"] == "in_progress" and task["claim_id"] == c["claim_id"]:
                item.update(tasks.record_failure(repo, conn, task, f"lease of {c['agent']} expired", "lease",
                                                 retry_as="pending"))
        events.record(conn, "claim.expired", c["claim_id"], **item)
        expired.append(item)
    return expired


@contextmanager
def _step(repo) -> Iterator[sqlite3.Connection]:
    """One claim-side transaction. Expired leases are recovered first and stay recovered even when the step
    then refuses (exit 4/6/7): the refusal rolls back to a savepoint taken after the recovery. Claim steps
    queue on a kernel lock first, so many agents claiming at once are served in turn."""
    from agentkit.state.locks import queued_lock

    conn = repo.store.conn
    with queued_lock(repo.paths.agents, "claims", repo.config["locks.timeout"]):
        conn.execute("BEGIN IMMEDIATE")
        try:
            expire_leases(repo, conn)
            conn.execute("SAVEPOINT step")
            try:
                yield conn
            except AgentkitError:
                conn.execute("ROLLBACK TO step")
                conn.execute("COMMIT")
                raise
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _new_claim(conn, task_id: int, agent: str, kind: str, lease_s: float, prior_status: str | None = None) -> dict:
    now = time.time()
    fence = (conn.execute("SELECT max(fence) FROM claims").fetchone()[0] or 0) + 1
    claim = {"claim_id": secrets.token_hex(8), "task_id": task_id, "agent": agent, "kind": kind,
             "prior_status": prior_status, "fence": fence,
             "state": "active", "lease_expires_at": now + lease_s, "outcome": None, "created_at": now,
             "ended_at": None}
    conn.execute(f"INSERT INTO claims ({', '.join(claim)}) VALUES ({', '.join('?' * len(claim))})",
                 tuple(claim.values()))
    events.record(conn, "claim.created", claim["claim_id"], task_id=task_id, agent=agent, kind=kind, fence=fence)
    return claim


def _not_ready_reason(conn, task: dict) -> str:
    if task["status"] not in tasks.READY_STATUSES:
        return f"it is {task['status']}" + (f" ({task['reason']})" if task.get("reason") else "")
    stuck = [d for d in tasks.diagnose(conn) if d["id"] == task["id"]]
    return tasks.describe_stuck(stuck) if stuck else "it is not ready"


def claim(repo, agent: str, task_id: int | None = None, lease: str | None = None) -> dict:
    """Claim task_id, or the best ready task. Same agent again: the same claim back (idempotent)."""
    if not agent or not agent.strip():
        raise usage("--agent NAME is required: a claim records who holds it")
    lease_s = _lease(repo, lease)
    with _step(repo) as conn:
        mine = conn.execute("SELECT * FROM claims WHERE agent = ? AND state = 'active' AND kind = 'work'"
                            + (" AND task_id = ?" if task_id is not None else "") + " ORDER BY fence LIMIT 1",
                            (agent, task_id) if task_id is not None else (agent,)).fetchone()
        if mine is not None:
            return {**_view(conn, mine), "existing": True}
        if task_id is not None:
            task = tasks.show_in(conn, task_id)
            holder = task["claim"]
            if holder is not None:
                raise conflict(f"task {task_id} is already claimed by {holder['agent']} until "
                               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['lease_expires_at']))}",
                               "pick another task, or wait for the lease to end")
            candidates = [r for r in tasks.scored_ready(repo, conn, full=False) if r["id"] == task_id]
            if not candidates:
                raise AgentkitError(f"task {task_id} is not ready: {_not_ready_reason(conn, task)}",
                                    "see `agentkit task status`", ExitCode.NOTHING_READY)
        else:
            candidates = tasks.scored_ready(repo, conn, full=False)
            if not candidates:
                stuck = tasks.diagnose(conn)
                why = tasks.describe_stuck(stuck) if stuck else "every task is passing (or there are none)"
                raise AgentkitError(f"nothing ready:\n  {why}", "see `agentkit task status` for the whole picture",
                                    ExitCode.NOTHING_READY)
        best = candidates[0]
        new = _new_claim(conn, best["id"], agent, "work", lease_s, prior_status=best["status"])
        won = conn.execute("UPDATE tasks SET status = 'in_progress', claim_id = ?, updated_at = ? "
                           "WHERE id = ? AND claim_id IS NULL AND status IN ('pending', 'failing')",
                           (new["claim_id"], time.time(), best["id"])).rowcount
        if won != 1:  # cannot happen under BEGIN IMMEDIATE; refuse loudly rather than double-assign
            raise conflict(f"task {best['id']} changed under the claim", "run `agentkit claim` again")
        return {**_view(conn, new), "existing": False, "score": best["score"], "score_parts": best["score_parts"]}


def claim_regression(repo, agent: str, count: int = 1, lease: str | None = None) -> dict:
    """Passing tasks to re-verify, least recently verified first, leased so testers do not overlap."""
    if not agent or not agent.strip():
        raise usage("--agent NAME is required: a claim records who holds it")
    if count < 1:
        raise usage("--count must be at least 1")
    lease_s = _lease(repo, lease)
    with _step(repo) as conn:
        mine = conn.execute("SELECT * FROM claims WHERE agent = ? AND state = 'active' AND kind = 'regression' "
                            "ORDER BY fence", (agent,)).fetchall()
        if mine:
            return {"schema_version": SCHEMA_VERSION, "claims": [_view(conn, c) for c in mine], "existing": True}
        rows = conn.execute(
            "SELECT id FROM tasks t WHERE status = 'passing' AND NOT EXISTS (SELECT 1 FROM claims c WHERE "
            "c.task_id = t.id AND c.state = 'active' AND c.kind = 'regression') "
            "ORDER BY verified_at IS NOT NULL, verified_at, id LIMIT ?", (count,)).fetchall()
        if not rows:
            raise AgentkitError("nothing to re-verify: no passing task is free of a regression claim",
                                "run again once tasks pass", ExitCode.NOTHING_READY)
        made = [_view(conn, _new_claim(conn, r[0], agent, "regression", lease_s)) for r in rows]
    return {"schema_version": SCHEMA_VERSION, "claims": made, "existing": False}


def _active(conn, claim_id: str) -> sqlite3.Row:
    c = conn.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).fetchone()
    if c is None:
        raise not_found(f"unknown claim {claim_id!r}", "claim ids are printed by `agentkit claim`")
    if c["state"] != "active" or c["lease_expires_at"] < time.time():
        state = "expired" if c["state"] == "active" else c["state"]
        holder = conn.execute("SELECT agent, fence FROM claims WHERE task_id = ? AND state = 'active' AND kind = ? "
                              "AND claim_id != ?", (c["task_id"], c["kind"], claim_id)).fetchone()
        raise conflict(f"claim {claim_id} (fence {c['fence']}) is {state}"
                       + (f"; task {c['task_id']} is now held by {holder['agent']} (fence {holder['fence']})"
                          if holder else ""),
                       "this agent lost the task: drop its result and claim again")
    return c


def heartbeat(repo, claim_id: str, lease: str | None = None) -> dict:
    lease_s = _lease(repo, lease)
    with _step(repo) as conn:
        c = _active(conn, claim_id)
        conn.execute("UPDATE claims SET lease_expires_at = ? WHERE claim_id = ?", (time.time() + lease_s, claim_id))
        events.record(conn, "claim.heartbeat", claim_id, task_id=c["task_id"])
        return _view(conn, conn.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).fetchone())


def release(repo, claim_id: str, outcome: str | None = None, reason: str | None = None) -> dict:
    """End a claim. No outcome: the task goes back to the pool untouched. Stale claims are refused (exit 7)."""
    if outcome is not None and outcome not in ("pass", "fail", "skip"):
        raise usage(f"unknown outcome {outcome!r}", "choose pass, fail or skip")
    with _step(repo) as conn:
        c = _active(conn, claim_id)
        now = time.time()
        if c["kind"] == "regression":
            conn.execute("UPDATE claims SET state = 'released', outcome = ?, ended_at = ? WHERE claim_id = ?",
                         (outcome, now, claim_id))
            if outcome == "pass":
                conn.execute("UPDATE tasks SET verified_at = ?, updated_at = ? WHERE id = ?", (now, now, c["task_id"]))
            elif outcome == "fail":
                tasks._set_status(conn, c["task_id"], "failing", reason or f"regression found by {c['agent']}")
            events.record(conn, "claim.released", claim_id, task_id=c["task_id"], outcome=outcome, kind="regression")
            task = tasks.show_in(conn, c["task_id"])
        elif outcome is None:
            conn.execute("UPDATE claims SET state = 'released', ended_at = ? WHERE claim_id = ?", (now, claim_id))
            back = c["prior_status"] or "pending"
            tasks._set_status(conn, c["task_id"], back, reason or tasks._get(conn, c["task_id"])["reason"],
                              claim_id=None)
            events.record(conn, "claim.released", claim_id, task_id=c["task_id"], outcome=None)
            task = tasks.show_in(conn, c["task_id"])
        else:
            task = tasks.apply_outcome(repo, conn, c["task_id"], outcome, reason)
            events.record(conn, "claim.released", claim_id, task_id=c["task_id"], outcome=outcome)
        row = dict(conn.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).fetchone())
    task.pop("claim", None)
    return {"schema_version": SCHEMA_VERSION, **row, "task": task}


def reap(repo) -> dict:
    """Recover expired leases (idempotent; safe to run from cron or a hook at the same time as others)."""
    with repo.store.tx() as conn:
        expired = expire_leases(repo, conn)
    return {"schema_version": SCHEMA_VERSION, "expired_claims": expired}
