"""Claims on tasks: one conditional UPDATE decides each, leases expire, fences stop zombie agents."""

import re
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


_ACTIVE_WORK = "state = 'active' AND kind = 'work'"


def _new_id() -> str:
    import secrets  # hashlib and hmac: 3 ms that `snapshot` (which imports this module) need not pay

    return secrets.token_hex(8)


def holders(conn, task_id: int | None = None) -> dict[int, dict]:
    """Active work claims by task id (for one task, or all)."""
    sql = f"SELECT * FROM claims WHERE {_ACTIVE_WORK}" + (" AND task_id = ?" if task_id is not None else "")
    return {r["task_id"]: dict(r) for r in conn.execute(sql, (task_id,) if task_id is not None else ())}


def get(repo, claim_id: str) -> dict | None:
    """A claim's row (any state), or None."""
    found = repo.store.rows("SELECT * FROM claims WHERE claim_id = ?", (claim_id,))
    return found[0] if found else None


def active_ids(repo, agent_like: str) -> list[str]:
    """The ids of active claims whose agent matches the SQL LIKE pattern `agent_like`."""
    return [r["claim_id"] for r in repo.store.rows("SELECT claim_id FROM claims WHERE state = 'active' AND "
                                                    "agent LIKE ? ORDER BY fence", (agent_like,))]


def is_active(repo, claim_id: str) -> bool:
    return bool(repo.store.rows("SELECT 1 FROM claims WHERE claim_id = ? AND state = 'active'", (claim_id,)))


def task_in(conn, task_id: int) -> dict:
    """A task as `task show` prints it: the task, its edges, and the claim that holds it (or None)."""
    return {**tasks.show_in(conn, task_id), "claim": holders(conn, task_id).get(task_id)}


def show_task(repo, task_id: int) -> dict:
    return task_in(repo.store.conn, task_id)


def task_status(repo) -> dict:
    """`task status`: counts, and when nothing is ready the diagnosis, with who holds what."""
    conn = repo.store.conn
    return tasks.status_in(conn, holders(conn))


def _view(conn, claim: sqlite3.Row | dict) -> dict:
    c = dict(claim)
    task = tasks.show_in(conn, c["task_id"])
    return {"schema_version": SCHEMA_VERSION, **c, "task": task, "worktree": worktree_hint(task)}


def _expire(repo, conn, now: float | None = None) -> list[dict]:
    """Expired leases: the claim ends as expired; a work task goes back to the pool with attempts + 1."""
    now = now or time.time()
    expired = []
    for c in conn.execute("SELECT * FROM claims WHERE state = 'active' AND lease_expires_at < ?", (now,)).fetchall():
        conn.execute("UPDATE claims SET state = 'expired', ended_at = ? WHERE claim_id = ?", (now, c["claim_id"]))
        item = {"claim_id": c["claim_id"], "task_id": c["task_id"], "agent": c["agent"], "kind": c["kind"]}
        if c["kind"] == "work":
            task = tasks.get(conn, c["task_id"])
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
    from agentkit.state.locks import named_lock

    conn = repo.store.conn
    with named_lock(repo.paths.agents, "claims", repo.config["locks.timeout"]):
        conn.execute("BEGIN IMMEDIATE")
        try:
            _expire(repo, conn)
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


def _new_claim(conn, task_id: int, agent: str, kind: str, lease_s: float, prior_status: str | None = None,
               claim_id: str | None = None) -> dict:
    now = time.time()
    fence = (conn.execute("SELECT max(fence) FROM claims").fetchone()[0] or 0) + 1
    claim = {"claim_id": claim_id or _new_id(), "task_id": task_id, "agent": agent, "kind": kind,
             "prior_status": prior_status, "fence": fence,
             "state": "active", "lease_expires_at": now + lease_s, "lease_s": lease_s, "outcome": None,
             "created_at": now, "ended_at": None}
    conn.execute(f"INSERT INTO claims ({', '.join(claim)}) VALUES ({', '.join('?' * len(claim))})",
                 tuple(claim.values()))
    events.record(conn, "claim.created", claim["claim_id"], task_id=task_id, agent=agent, kind=kind, fence=fence)
    return claim


def _not_ready_reason(conn, task: dict) -> str:
    if task["status"] not in tasks.READY_STATUSES:
        return f"it is {task['status']}" + (f" ({task['reason']})" if task.get("reason") else "")
    stuck = [d for d in tasks.diagnose(conn, holders(conn)) if d["id"] == task["id"]]
    return tasks.describe_stuck(stuck) if stuck else "it is not ready"


def _require_agent(agent: str) -> None:
    if not agent or not agent.strip():
        raise usage("--agent NAME is required: a claim records who holds it")


def claim(repo, agent: str, task_id: int | None = None, lease: str | None = None) -> dict:
    """Claim task_id, or the best ready task. Same agent again: the same claim back (idempotent)."""
    _require_agent(agent)
    lease_s = _lease(repo, lease)
    with _step(repo) as conn:
        mine = conn.execute(f"SELECT * FROM claims WHERE agent = ? AND {_ACTIVE_WORK}"
                            + (" AND task_id = ?" if task_id is not None else "") + " ORDER BY fence LIMIT 1",
                            (agent, task_id) if task_id is not None else (agent,)).fetchone()
        if mine is not None:
            made, extra = dict(mine), {"existing": True}
        else:
            taken = _take(repo, conn, task_id)
            made = _new_claim(conn, taken["id"], agent, "work", lease_s, taken["prior_status"], taken["claim_id"])
            extra = {"existing": False, "score": taken["score"], "score_parts": taken["score_parts"]}
    # the view is read after the commit, outside the claim queue: WAL readers wait for nobody
    return {**_view(repo.store.conn, made), **extra}


def _take(repo, conn, task_id: int | None) -> dict:
    """The task a new claim takes (task_id, or the best ready one), marked in progress under a fresh claim id."""
    claim_id = _new_id()
    if task_id is None:
        taken = tasks.take(repo, conn, claim_id)
        if taken is None:
            stuck = tasks.diagnose(conn, holders(conn))
            why = tasks.describe_stuck(stuck) if stuck else "every task is passing (or there are none)"
            raise AgentkitError(f"nothing ready:\n  {why}", "see `agentkit task status` for the whole picture",
                                ExitCode.NOTHING_READY)
        return {**taken, "claim_id": claim_id}
    task = tasks.get(conn, task_id)
    holder = holders(conn, task_id).get(task_id)
    if holder is not None:
        raise conflict(f"task {task_id} is already claimed by {holder['agent']} until "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['lease_expires_at']))}",
                       "pick another task, or wait for the lease to end")
    taken = tasks.take(repo, conn, claim_id, task_id)
    if taken is None:
        raise AgentkitError(f"task {task_id} is not ready: {_not_ready_reason(conn, task)}",
                            "see `agentkit task status`", ExitCode.NOTHING_READY)
    return {**taken, "claim_id": claim_id}


def claim_regression(repo, agent: str, count: int = 1, lease: str | None = None) -> dict:
    """Passing tasks to re-verify, least recently verified first, leased so testers do not overlap."""
    _require_agent(agent)
    if not 0 < count < 2**63:
        raise usage(f"--count must be at least 1 (and below 2^63), not {count}")
    lease_s = _lease(repo, lease)
    with _step(repo) as conn:
        mine = conn.execute("SELECT * FROM claims WHERE agent = ? AND state = 'active' AND kind = 'regression' "
                            "ORDER BY fence", (agent,)).fetchall()
        if mine:
            return {"schema_version": SCHEMA_VERSION, "claims": [_view(conn, c) for c in mine], "existing": True}
        busy = {r[0] for r in conn.execute("SELECT task_id FROM claims WHERE state = 'active' AND kind = 'regression'")}
        ids = tasks.least_recently_verified(conn, busy, count)
        if not ids:
            raise AgentkitError("nothing to re-verify: no passing task is free of a regression claim",
                                "run again once tasks pass", ExitCode.NOTHING_READY)
        made = [_view(conn, _new_claim(conn, task_id, agent, "regression", lease_s)) for task_id in ids]
    return {"schema_version": SCHEMA_VERSION, "claims": made, "existing": False}


def _live(conn, c: sqlite3.Row) -> sqlite3.Row:
    """The one stale-fence check: a claim that ended, or whose lease ran out, may not act (exit 7)."""
    if c["state"] != "active" or c["lease_expires_at"] < time.time():
        state = "expired" if c["state"] == "active" else c["state"]
        holder = conn.execute("SELECT agent, fence FROM claims WHERE task_id = ? AND state = 'active' AND kind = ? "
                              "AND claim_id != ?", (c["task_id"], c["kind"], c["claim_id"])).fetchone()
        raise conflict(f"claim {c['claim_id']} (fence {c['fence']}) is {state}"
                       + (f"; task {c['task_id']} is now held by {holder['agent']} (fence {holder['fence']})"
                          if holder else ""),
                       "this agent lost the task: drop its result and claim again")
    return c


def _active(conn, claim_id: str) -> sqlite3.Row:
    c = conn.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).fetchone()
    if c is None:
        raise not_found(f"unknown claim {claim_id!r}", "claim ids are printed by `agentkit claim`")
    return _live(conn, c)


def _by_fence(conn, task_id: int, fence: int) -> sqlite3.Row:
    c = conn.execute("SELECT * FROM claims WHERE fence = ? AND kind = 'work'", (fence,)).fetchone()
    if c is None or c["task_id"] != task_id:
        raise conflict(f"fence {fence} never held task {task_id}",
                       "pass the fence printed by the `agentkit claim` that took this task")
    return _live(conn, c)


def _end_work_claims(conn, task_id: int, outcome: str | None) -> None:
    conn.execute(f"UPDATE claims SET state = 'released', outcome = ?, ended_at = ? WHERE task_id = ? AND "
                 f"{_ACTIVE_WORK}", (outcome, time.time(), task_id))


def lease_of(repo, claim: sqlite3.Row | dict | str) -> float:
    """How long a heartbeat renews a claim (a row, or its id) for: the lease it was taken with (or last given
    by `heartbeat --lease`); claims.lease for a claim made before claims recorded theirs, or an unknown one."""
    if isinstance(claim, str):
        found = repo.store.rows("SELECT lease_s FROM claims WHERE claim_id = ?", (claim,))
        claim = found[0] if found else {"lease_s": None}
    return claim["lease_s"] if claim["lease_s"] is not None else _lease(repo, None)


def heartbeat(repo, claim_id: str, lease: str | None = None) -> dict:
    """Renew a claim's lease to now + its own length, or + `lease`, which becomes its length from then on."""
    given = _lease(repo, lease) if lease else None
    with _step(repo) as conn:
        c = _active(conn, claim_id)
        lease_s = given if given is not None else lease_of(repo, c)
        conn.execute("UPDATE claims SET lease_expires_at = ?, lease_s = coalesce(?, lease_s) WHERE claim_id = ?",
                     (time.time() + lease_s, given, claim_id))
        events.record(conn, "claim.heartbeat", claim_id, task_id=c["task_id"])
        return _view(conn, conn.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).fetchone())


def release(repo, claim_id: str, outcome: str | None = None, reason: str | None = None) -> dict:
    """End a claim. No outcome: the task goes back to the pool untouched. Stale claims are refused (exit 7)."""
    if outcome is not None and outcome not in ("pass", "fail", "skip"):
        raise usage(f"unknown outcome {outcome!r}", "choose pass, fail or skip")
    extra: dict = {}
    with _step(repo) as conn:
        c = _active(conn, claim_id)
        task_id = c["task_id"]
        if c["kind"] == "regression":
            conn.execute("UPDATE claims SET state = 'released', outcome = ?, ended_at = ? WHERE claim_id = ?",
                         (outcome, time.time(), claim_id))
            if outcome == "pass":
                tasks.mark_verified(conn, task_id)
            elif outcome == "fail":
                extra = tasks.regressed(repo, conn, task_id, reason or f"regression found by {c['agent']}")
            events.record(conn, "claim.released", claim_id, task_id=task_id, outcome=outcome, kind="regression")
        elif outcome is None:
            _end_work_claims(conn, task_id, None)
            tasks.put_back(conn, task_id, c["prior_status"] or "pending", reason)
            events.record(conn, "claim.released", claim_id, task_id=task_id, outcome=None)
        else:
            _end_work_claims(conn, task_id, outcome)
            extra = tasks.apply_outcome(repo, conn, task_id, outcome, reason)
            events.record(conn, "claim.released", claim_id, task_id=task_id, outcome=outcome)
    conn = repo.store.conn  # read after the commit, outside the claim queue
    row = dict(conn.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).fetchone())
    return {"schema_version": SCHEMA_VERSION, **row, "task": {**tasks.show_in(conn, task_id), **extra}}


def settle(repo, task_id: int, outcome: str, reason: str | None = None, fence: int | None = None,
           only_from: tuple[str, ...] | None = None) -> dict:
    """A person's or a script's verdict on a task (`task pass|fail|skip|reset`), ending the claim on it.
    With a fence, refused (exit 7) unless that fence's claim still holds the task; with `only_from`, unless
    the task's status is one of those, read in the same transaction."""
    if fence is not None and not 0 < fence < 2**63:  # fences count up from 1 in a 64-bit column
        raise usage(f"--fence {fence} is not a fence: fences are positive 64-bit integers",
                    "pass the fence printed by the `agentkit claim` that took this task")
    with repo.store.tx() as conn:
        status = tasks.get(conn, task_id)["status"]
        if only_from is not None and status not in only_from:
            raise conflict(f"task {task_id} is {status}, not {' or '.join(only_from)}",
                           "look at it again (`agentkit task show`): it changed, or is not that kind of task")
        if fence is not None:
            _by_fence(conn, task_id, fence)
        _end_work_claims(conn, task_id, outcome)
        extra = tasks.apply_outcome(repo, conn, task_id, outcome, reason)
        return {**tasks.show_in(conn, task_id), **extra, "claim": holders(conn, task_id).get(task_id)}


def report(repo, task_id: int, outcome: str, reason: str | None, fence: int) -> dict:
    """An agent's own verdict on the task its claim (`fence`) holds, kept on the claim for the spawner to apply:
    `agentkit run` merges a passed branch first, so no dependent starts before the code is in. Refused (exit 7)
    unless that fence still holds the task."""
    if outcome not in ("pass", "fail"):
        raise usage(f"only pass or fail can be reported, not {outcome!r}")
    with _step(repo) as conn:
        c = _by_fence(conn, task_id, fence)
        conn.execute("UPDATE claims SET reported = ?, reported_reason = ? WHERE claim_id = ?",
                     (outcome, reason, c["claim_id"]))
        events.record(conn, "claim.reported", c["claim_id"], task_id=task_id, outcome=outcome, reason=reason)
    conn = repo.store.conn
    return {**tasks.show_in(conn, task_id), "claim": holders(conn, task_id).get(task_id), "reported": outcome}


def recover_expired(repo) -> dict:
    """Claims whose lease ran out end as expired; their tasks go back to the pool (idempotent; safe to run
    from cron or a hook beside other commands)."""
    with repo.store.tx() as conn:
        expired = _expire(repo, conn)
    return {"schema_version": SCHEMA_VERSION, "expired_claims": expired}
