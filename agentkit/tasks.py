"""The task graph: tasks, dependencies (never a cycle), the ready set, scores, outcomes and diagnosis."""

import json
import sqlite3
import time
from collections import deque
from pathlib import Path

from agentkit import events
from agentkit.errors import AgentkitError, ExitCode, conflict, not_found, usage

SCHEMA_VERSION = 1
STATUSES = ("pending", "in_progress", "passing", "failing", "blocked", "dead")
READY_STATUSES = ("pending", "failing")  # failing: a regression (or a failed attempt) left work to redo
OUTCOMES = ("pass", "fail", "skip", "reset")

_SCORE_COLUMNS = "t.id, t.name, t.priority, t.skip_count, t.attempts, t.status, t.category, t.meta"
_READY_SQL = """
    SELECT {columns} FROM tasks t
    WHERE t.status IN ('pending', 'failing') AND t.claim_id IS NULL AND NOT EXISTS (
        SELECT 1 FROM task_deps d LEFT JOIN tasks u ON u.id = d.dep_id
        WHERE d.task_id = t.id AND (u.id IS NULL OR u.status != 'passing'))
"""


# ---- rows ------------------------------------------------------------------------------------------

def _task(row) -> dict:
    t = dict(row)
    t["steps"] = json.loads(t["steps"])
    t["meta"] = json.loads(t["meta"])
    return t


def _get(conn: sqlite3.Connection, task_id: int) -> dict:
    row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise not_found(f"unknown task {task_id}", "see `agentkit task list`")
    return _task(row)


def _deps(conn: sqlite3.Connection) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for task_id, dep_id in conn.execute("SELECT task_id, dep_id FROM task_deps"):
        out.setdefault(task_id, set()).add(dep_id)
    return out


def _set_status(conn, task_id: int, status: str, reason: str | None = None, **extra) -> None:
    cols = ", ".join(f"{k} = ?" for k in extra)
    conn.execute(f"UPDATE tasks SET status = ?, reason = ?, updated_at = ?{', ' + cols if cols else ''} WHERE id = ?",
                 (status, reason, time.time(), *extra.values(), task_id))


# ---- graph checks (iterative: a 1,000-deep chain is fine) ----------------------------------------------

def find_path(deps: dict[int, set[int]], start: int, goal: int) -> list[int] | None:
    """A path start → … → goal following depends-on edges, or None."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            while node is not None:
                path.append(node)
                node = parent[node]
            return path[::-1]
        for nxt in sorted(deps.get(node, ())):
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return None


def cycle_error(path: list[int]) -> AgentkitError:
    return usage(f"dependency cycle refused: {' → '.join(map(str, path))}",
                 "each arrow reads 'depends on'; drop one of these dependencies")


def _check_edge(deps: dict[int, set[int]], task_id: int, dep_id: int) -> None:
    if task_id == dep_id:
        raise usage(f"task {task_id} cannot depend on itself")
    back = find_path(deps, dep_id, task_id)
    if back is not None:
        raise cycle_error([task_id, *back])


def find_cycle(nodes: list[int], deps: dict[int, set[int]]) -> list[int] | None:
    """Any cycle in the graph, as a closed path, or None (Kahn's algorithm, then a walk inside the rest)."""
    indeg = {n: 0 for n in nodes}
    for n in nodes:
        for d in deps.get(n, ()):
            if d in indeg:
                indeg[n] += 1
    dependents: dict[int, list[int]] = {}
    for n in nodes:
        for d in deps.get(n, ()):
            dependents.setdefault(d, []).append(n)
    queue = deque(n for n, k in indeg.items() if k == 0)
    while queue:
        n = queue.popleft()
        for m in dependents.get(n, ()):
            indeg[m] -= 1
            if indeg[m] == 0:
                queue.append(m)
    rest = {n for n, k in indeg.items() if k > 0}
    if not rest:
        return None
    node, seen = min(rest), []
    while node not in seen:  # every node left has a dependency inside the rest: walking must loop
        seen.append(node)
        node = min(d for d in deps[node] if d in rest)
    return seen[seen.index(node):] + [node]


def dependents_counts(ids: list[int], deps: dict[int, set[int]]) -> dict[int, int]:
    """Distinct tasks depending on each task, directly or transitively (bitsets, dependents first)."""
    bit = {n: 1 << i for i, n in enumerate(ids)}
    dependents: dict[int, list[int]] = {}
    for n, ds in deps.items():
        for d in ds:
            dependents.setdefault(d, []).append(n)
    waiting = {n: len(dependents.get(n, ())) for n in ids}
    below: dict[int, int] = {}
    queue = deque(n for n in ids if waiting[n] == 0)
    while queue:
        n = queue.popleft()
        acc = 0
        for m in dependents.get(n, ()):
            acc |= below.get(m, 0) | bit.get(m, 0)
        below[n] = acc
        for d in deps.get(n, ()):
            if d in waiting:
                waiting[d] -= 1
                if waiting[d] == 0:
                    queue.append(d)
    return {n: below.get(n, 0).bit_count() for n in ids}


# ---- creating tasks -----------------------------------------------------------------------------------

def _insert(conn, name: str, priority: int, description: str, category: str, steps: list, meta: dict,
            status: str = "pending", task_id: int | None = None) -> int:
    now = time.time()
    cur = conn.execute(
        "INSERT INTO tasks (id, name, description, category, steps, priority, status, meta, created_at, updated_at,"
        " verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, name, description, category, json.dumps(steps), priority, status, json.dumps(meta), now, now,
         now if status == "passing" else None))
    return cur.lastrowid


def add(repo, name: str, priority: int = 1000, deps: list[int] = (), description: str = "", category: str = "",
        steps: list[str] = (), meta: dict | None = None) -> dict:
    if not name.strip():
        raise usage("a task needs a name")
    with repo.store.tx() as conn:
        for dep in deps:
            _get(conn, dep)
        task_id = _insert(conn, name, priority, description, category, list(steps), meta or {})
        for dep in dict.fromkeys(deps):
            if dep == task_id:
                raise usage(f"task {task_id} cannot depend on itself")
            conn.execute("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)", (task_id, dep))
        events.record(conn, "task.added", str(task_id), name=name, deps=list(deps))
        return show_in(conn, task_id)


def _load_file(path: Path) -> list:
    try:
        text = path.read_text()
    except OSError as exc:
        raise not_found(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml and json raise their own types
        raise usage(f"cannot parse {path}: {exc}", "tasks files are JSON or YAML (.yaml/.yml)") from exc
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise usage(f"{path} must hold a list of tasks (or an object with a `tasks` list)")
    return data


def import_file(repo, path: Path) -> dict:
    """Add every task in a JSON/YAML file, or none: one bad entry rejects the file with every problem listed."""
    entries = _load_file(Path(path))
    problems: list[str] = []
    with repo.store.tx() as conn:
        existing_ids = {r[0] for r in conn.execute("SELECT id FROM tasks")}
        names: dict[str, list[int]] = {}
        for r in conn.execute("SELECT id, name FROM tasks"):
            names.setdefault(r[1], []).append(r[0])
        next_id = (conn.execute("SELECT max(id) FROM tasks").fetchone()[0] or 0) + 1
        staged = []
        file_names: dict[str, list[int]] = {}
        seen_ids: set[int | None] = set()
        explicit = {e.get("id") for e in entries if isinstance(e, dict) and isinstance(e.get("id"), int)}
        for i, e in enumerate(entries, 1):
            label = f"entry {i}"
            if not isinstance(e, dict):
                problems.append(f"{label}: not an object")
                continue
            name = e.get("name") or e.get("description")
            label = f"entry {i} ({name!r})" if name else label
            if not isinstance(name, str) or not name.strip():
                problems.append(f"{label}: needs a name")
                continue
            tid = e.get("id")
            if tid is not None and (not isinstance(tid, int) or isinstance(tid, bool) or tid < 1):
                problems.append(f"{label}: id must be a positive integer")
                continue
            if tid in existing_ids:
                problems.append(f"{label}: id {tid} already exists")
            elif tid is not None and tid in seen_ids:
                problems.append(f"{label}: id {tid} is used twice in this file")
            seen_ids.add(tid)
            if tid is None:
                while next_id in explicit or next_id in existing_ids:
                    next_id += 1
                tid = next_id
                next_id += 1
            priority = e.get("priority", 1000)
            if not isinstance(priority, int) or isinstance(priority, bool):
                problems.append(f"{label}: priority must be an integer")
            steps = e.get("steps", [])
            if not isinstance(steps, list):
                problems.append(f"{label}: steps must be a list")
            meta = e.get("meta", {})
            if not isinstance(meta, dict):
                problems.append(f"{label}: meta must be an object")
            status = "passing" if e.get("passes") is True or e.get("status") == "passing" else "pending"
            if e.get("status") not in (None, "pending", "passing"):
                problems.append(f"{label}: status on import must be pending or passing")
            deps = e.get("depends_on", [])
            if not isinstance(deps, list):
                problems.append(f"{label}: depends_on must be a list")
                deps = []
            file_names.setdefault(name, []).append(tid)
            staged.append({"label": label, "id": tid, "name": name, "priority": priority, "steps": steps,
                           "meta": meta, "status": status, "deps": deps,
                           "description": e.get("description", "") if e.get("name") else "",
                           "category": str(e.get("category") or "")})
        new_ids = {s["id"] for s in staged}
        graph = _deps(conn)
        for s in staged:
            resolved = set()
            for ref in s["deps"]:
                if isinstance(ref, int) and not isinstance(ref, bool):
                    if ref in new_ids or ref in existing_ids:
                        resolved.add(ref)
                    else:
                        problems.append(f"{s['label']}: depends on unknown task id {ref}")
                elif isinstance(ref, str):
                    hits = file_names.get(ref) or names.get(ref) or []
                    if len(hits) == 1:
                        resolved.add(hits[0])
                    elif not hits:
                        problems.append(f"{s['label']}: depends on unknown task {ref!r}")
                    else:
                        problems.append(f"{s['label']}: depends on {ref!r}, a name shared by tasks {hits}")
                else:
                    problems.append(f"{s['label']}: depends_on entries are ids or names, not {ref!r}")
            if s["id"] in resolved:
                problems.append(f"{s['label']}: depends on itself")
                resolved.discard(s["id"])
            graph[s["id"]] = resolved
        cycle = find_cycle(sorted(existing_ids | new_ids), graph)
        if cycle:
            problems.append(cycle_error(cycle).message)
        if problems:
            problems.sort(key=lambda p: int(p.split()[1].rstrip(":")) if p.startswith("entry ") else 1 << 30)
            raise AgentkitError(f"{path}: {len(problems)} problem(s), nothing imported:\n  " + "\n  ".join(problems),
                                "fix the entries listed and import again", ExitCode.USAGE)
        for s in staged:
            _insert(conn, s["name"], s["priority"], s["description"], s["category"], s["steps"], s["meta"],
                    s["status"], s["id"])
        for s in staged:
            for dep in sorted(graph[s["id"]]):
                conn.execute("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)", (s["id"], dep))
        events.record(conn, "task.imported", str(path), count=len(staged))
    return {"schema_version": SCHEMA_VERSION, "imported": len(staged), "ids": [s["id"] for s in staged]}


# ---- reading ------------------------------------------------------------------------------------------

def list_tasks(repo, status: str | None = None) -> list[dict]:
    if status is not None and status not in STATUSES:
        raise usage(f"unknown status {status!r}", f"choose one of: {', '.join(STATUSES)}")
    sql = "SELECT * FROM tasks" + (" WHERE status = ?" if status else "") + " ORDER BY id"
    return [_task(r) for r in repo.store.conn.execute(sql, (status,) if status else ())]


def show_in(conn, task_id: int) -> dict:
    t = _get(conn, task_id)
    t["depends_on"] = [r[0] for r in conn.execute("SELECT dep_id FROM task_deps WHERE task_id = ? ORDER BY 1",
                                                  (task_id,))]
    t["required_by"] = [r[0] for r in conn.execute("SELECT task_id FROM task_deps WHERE dep_id = ? ORDER BY 1",
                                                  (task_id,))]
    claim = conn.execute("SELECT * FROM claims WHERE task_id = ? AND state = 'active' AND kind = 'work'",
                         (task_id,)).fetchone()
    t["claim"] = dict(claim) if claim else None
    return t


def show(repo, task_id: int) -> dict:
    return show_in(repo.store.conn, task_id)


def graph(repo) -> dict:
    conn = repo.store.conn
    nodes = [{"id": r[0], "name": r[1], "status": r[2]} for r in
             conn.execute("SELECT id, name, status FROM tasks ORDER BY id")]
    edges = [[r[0], r[1]] for r in conn.execute("SELECT task_id, dep_id FROM task_deps ORDER BY 1, 2")]
    return {"schema_version": SCHEMA_VERSION, "tasks": nodes, "edges": edges}


def _score_row(row) -> dict:
    t = dict(row)
    t["meta"] = {} if t["meta"] == "{}" else json.loads(t["meta"])
    return t


def scored_ready(repo, conn: sqlite3.Connection, full: bool = True) -> list[dict]:
    """The ready set with scores, best first: score desc, then priority, then id.

    `full=False` reads only what scoring needs (a claim picks one task and reads the winner whole)."""
    if full:
        rows = [_task(r) for r in conn.execute(_READY_SQL.format(columns="t.*"))]
    else:
        rows = [_score_row(r) for r in conn.execute(_READY_SQL.format(columns=_SCORE_COLUMNS))]
    if not rows:
        return []
    ids = [r[0] for r in conn.execute("SELECT id FROM tasks")]
    counts = dependents_counts(ids, _deps(conn))
    for r in rows:
        r["dependents"] = counts.get(r["id"], 0)
    scores = repo.hook.task_scores(tasks=rows)
    if not isinstance(scores, list) or len(scores) != len(rows):
        raise AgentkitError(f"the task_scores plugin answered {len(scores) if isinstance(scores, list) else scores!r}"
                            f" scores for {len(rows)} tasks", "fix the plugin, or disable it with AGENTKIT_PLUGINS")
    for r, s in zip(rows, scores, strict=True):
        r["score"], r["score_parts"] = int(s["score"]), s["parts"]
    rows.sort(key=lambda r: (-r["score"], r["priority"], r["id"]))
    return rows


def ready(repo) -> list[dict]:
    return scored_ready(repo, repo.store.conn)


# ---- outcomes -----------------------------------------------------------------------------------------

def _transitive_dependents(conn, task_id: int) -> list[int]:
    dependents: dict[int, list[int]] = {}
    for t, d in conn.execute("SELECT task_id, dep_id FROM task_deps"):
        dependents.setdefault(d, []).append(t)
    seen, queue = [], deque(dependents.get(task_id, ()))
    while queue:
        n = queue.popleft()
        if n not in seen:
            seen.append(n)
            queue.extend(dependents.get(n, ()))
    return seen


def block_dependents(conn, task_id: int, name: str) -> list[int]:
    blocked = []
    for dep_id in _transitive_dependents(conn, task_id):
        row = conn.execute("SELECT status FROM tasks WHERE id = ?", (dep_id,)).fetchone()
        if row and row[0] in ("pending", "failing", "blocked"):
            _set_status(conn, dep_id, "blocked", f"blocked by dead task {task_id} ({name})")
            blocked.append(dep_id)
    if blocked:
        events.record(conn, "task.blocked", str(task_id), dependents=blocked)
    return blocked


def _unblock(conn) -> list[int]:
    """Blocked tasks with no dead task upstream any more go back to pending."""
    deps = _deps(conn)
    dead = {r[0] for r in conn.execute("SELECT id FROM tasks WHERE status = 'dead'")}
    freed = []
    for (task_id,) in conn.execute("SELECT id FROM tasks WHERE status = 'blocked'").fetchall():
        seen, queue, hit = {task_id}, deque([task_id]), False
        while queue and not hit:
            for d in deps.get(queue.popleft(), ()):
                if d in dead:
                    hit = True
                    break
                if d not in seen:
                    seen.add(d)
                    queue.append(d)
        if not hit:
            _set_status(conn, task_id, "pending")
            freed.append(task_id)
    return freed


def record_failure(repo, conn, task: dict, reason: str | None, kind: str, retry_as: str = "failing") -> dict:
    """One failed attempt: `retry_as` (claimable again), or dead at max_attempts with every dependent blocked."""
    attempts = task["attempts"] + 1
    if attempts >= repo.config["tasks.max_attempts"]:
        _set_status(conn, task["id"], "dead", reason or f"failed {attempts} times", attempts=attempts, claim_id=None)
        blocked = block_dependents(conn, task["id"], task["name"])
        events.record(conn, "task.dead", str(task["id"]), attempts=attempts, reason=reason, via=kind)
        return {"status": "dead", "attempts": attempts, "blocked": blocked}
    _set_status(conn, task["id"], retry_as, reason, attempts=attempts, claim_id=None)
    events.record(conn, "task.failed", str(task["id"]), attempts=attempts, reason=reason, via=kind)
    return {"status": retry_as, "attempts": attempts, "blocked": []}


def _end_claims(conn, task_id: int, state: str, outcome: str | None) -> None:
    conn.execute("UPDATE claims SET state = ?, outcome = ?, ended_at = ? WHERE task_id = ? AND state = 'active' "
                 "AND kind = 'work'", (state, outcome, time.time(), task_id))


def apply_outcome(repo, conn, task_id: int, outcome: str, reason: str | None = None) -> dict:
    """pass, fail, skip or reset a task inside the caller's transaction."""
    if outcome not in OUTCOMES:
        raise usage(f"unknown outcome {outcome!r}", f"choose one of: {', '.join(OUTCOMES)}")
    task = _get(conn, task_id)
    _end_claims(conn, task_id, "released", outcome)
    extra: dict = {}
    if outcome == "pass":
        _set_status(conn, task_id, "passing", reason, claim_id=None, verified_at=time.time())
        extra = {"unblocked": _unblock(conn)} if task["status"] == "dead" else {}
        events.record(conn, "task.passed", str(task_id), reason=reason, **extra)
    elif outcome == "fail":
        extra = record_failure(repo, conn, task, reason, "task fail")
    elif outcome == "skip":
        if task["status"] in ("passing", "dead", "blocked"):
            raise conflict(f"task {task_id} is {task['status']}; only open work can be skipped")
        _set_status(conn, task_id, "pending", reason, claim_id=None, skip_count=task["skip_count"] + 1)
        events.record(conn, "task.skipped", str(task_id), skip_count=task["skip_count"] + 1, reason=reason)
    else:
        _set_status(conn, task_id, "pending", reason, claim_id=None, attempts=0)
        extra = {"unblocked": _unblock(conn)}
        events.record(conn, "task.reset", str(task_id), was=task["status"], reason=reason, **extra)
    return {**show_in(conn, task_id), **extra}


def set_outcome(repo, task_id: int, outcome: str, reason: str | None = None, fence: int | None = None) -> dict:
    """A human's or a script's verdict. With --fence, refused (exit 7) unless that fence still holds the task."""
    with repo.store.tx() as conn:
        if fence is not None:
            holder = conn.execute("SELECT * FROM claims WHERE task_id = ? AND state = 'active' AND kind = 'work'",
                                  (task_id,)).fetchone()
            if holder is None or holder["fence"] != fence or holder["lease_expires_at"] < time.time():
                raise conflict(f"stale fence {fence} for task {task_id}"
                               + (f": it is now held by {holder['agent']} (fence {holder['fence']})" if holder
                                  and holder["fence"] != fence else ": the lease is gone"),
                               "this agent's claim was lost; drop its result and claim again")
        return apply_outcome(repo, conn, task_id, outcome, reason)


def dep_add(repo, task_id: int, dep_id: int) -> dict:
    with repo.store.tx() as conn:
        _get(conn, task_id)
        _get(conn, dep_id)
        _check_edge(_deps(conn), task_id, dep_id)
        conn.execute("INSERT OR IGNORE INTO task_deps (task_id, dep_id) VALUES (?, ?)", (task_id, dep_id))
        dep = _get(conn, dep_id)
        if dep["status"] == "dead":
            block_dependents(conn, dep_id, dep["name"])
        events.record(conn, "task.dep_added", str(task_id), dep=dep_id)
        return show_in(conn, task_id)


def dep_rm(repo, task_id: int, dep_id: int) -> dict:
    with repo.store.tx() as conn:
        _get(conn, task_id)
        gone = conn.execute("DELETE FROM task_deps WHERE task_id = ? AND dep_id = ?", (task_id, dep_id)).rowcount
        if not gone:
            raise not_found(f"task {task_id} does not depend on {dep_id}")
        _unblock(conn)
        events.record(conn, "task.dep_removed", str(task_id), dep=dep_id)
        return show_in(conn, task_id)


# ---- status and diagnosis -------------------------------------------------------------------------------

def diagnose(conn) -> list[dict]:
    """For each open task that is not ready: what it waits on (unmet, dead, missing deps; a claim; itself)."""
    statuses = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, status, name FROM tasks")}
    deps = _deps(conn)
    claims = {r["task_id"]: dict(r) for r in conn.execute("SELECT * FROM claims WHERE state = 'active' AND "
                                                          "kind = 'work'")}
    out = []
    for task_id, (status, name) in sorted(statuses.items()):
        if status == "passing":
            continue
        item = {"id": task_id, "name": name, "status": status, "unmet": [], "dead": [], "missing": []}
        for d in sorted(deps.get(task_id, ())):
            if d not in statuses:
                item["missing"].append(d)
            elif statuses[d][0] == "dead":
                item["dead"].append(d)
            elif statuses[d][0] != "passing":
                item["unmet"].append({"id": d, "status": statuses[d][0]})
        if task_id in claims:
            c = claims[task_id]
            item["claimed_by"] = {"agent": c["agent"], "lease_expires_at": c["lease_expires_at"]}
        if status in READY_STATUSES and not (item["unmet"] or item["dead"] or item["missing"]) \
                and task_id not in claims:
            continue  # ready
        out.append(item)
    return out


def describe_stuck(items: list[dict]) -> str:
    lines = []
    for it in items[:10]:
        why = []
        if it["status"] == "dead":
            why.append("is dead")
        if it.get("claimed_by"):
            why.append(f"is claimed by {it['claimed_by']['agent']}")
        if it["dead"]:
            why.append(f"dead deps {it['dead']}")
        if it["missing"]:
            why.append(f"missing deps {it['missing']}")
        if it["unmet"]:
            why.append("waits on " + ", ".join(f"{u['id']} ({u['status']})" for u in it["unmet"]))
        lines.append(f"task {it['id']} ({it['name']}): {'; '.join(why) or it['status']}")
    more = len(items) - 10
    return "\n  ".join(lines) + (f"\n  … and {more} more" if more > 0 else "")


def status(repo) -> dict:
    conn = repo.store.conn
    counts = dict.fromkeys(STATUSES, 0)
    for st, n in conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"):
        counts[st] = n
    ready_count = conn.execute(f"SELECT count(*) FROM ({_READY_SQL.format(columns='t.id')})").fetchone()[0]
    remaining = sum(n for s, n in counts.items() if s != "passing")
    out = {"schema_version": SCHEMA_VERSION, "counts": counts, "total": sum(counts.values()), "ready": ready_count,
           "remaining": remaining, "stuck": remaining > 0 and ready_count == 0 and counts["in_progress"] == 0}
    if remaining and not ready_count:
        out["diagnosis"] = diagnose(conn)
    return out
