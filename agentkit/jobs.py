"""Agent jobs: registered in the state DB, run under a concurrency limit in FIFO order by an executor plugin."""

import json
import os
import time
from pathlib import Path
from signal import SIGTERM

from agentkit import durations, events, procs
from agentkit.errors import AgentkitError, ExitCode, not_found, usage

SCHEMA_VERSION = 1
STATES = ("queued", "running", "succeeded", "failed", "timed_out", "killed")
FINISHED = ("succeeded", "failed", "timed_out", "killed")


def jobs_dir(repo) -> Path:
    path = repo.paths.agents / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_file(repo, token: str) -> Path:
    """The spawner's saved environment (0600), written before the job's row exists and deleted when it ends."""
    return jobs_dir(repo) / f"{token}.env.json"


def _job(row) -> dict:
    job = dict(row)
    job["command"] = json.loads(job["command"])
    return job


def _get(conn, job_id: int) -> dict:
    row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise not_found(f"unknown job {job_id}", "see `agentkit jobs list`")
    return _job(row)


def get(repo, job_id: int) -> dict:
    return _get(repo.store.conn, job_id)


def executors(repo) -> dict:
    found: dict = {}
    repo.hook.register_executors(register=lambda name, ex: found.setdefault(name, ex))
    return found


def _executor(repo, name: str):
    found = executors(repo)
    if name not in found:
        raise usage(f"unknown executor {name!r}", f"choose one of: {', '.join(sorted(found))}")
    return found[name]


def exit_status(job: dict) -> int | None:
    """The exit code `jobs wait` gives: the job's own, 124 when timed out, 128 + signal when killed."""
    state = job["state"]
    if state not in FINISHED:
        return None
    if state == "succeeded":
        return 0
    if state == "timed_out":
        return 124
    if job.get("signal"):
        return 128 + job["signal"]
    if state == "killed":  # it caught our TERM and exited on its own terms: still killed
        return 128 + int(SIGTERM)
    return job["exit_code"] if job.get("exit_code") is not None else 1


def view(job: dict) -> dict:
    out = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in job.items() if k not in ("token",)}}
    out["exit_status"] = exit_status(job)
    out["wait_s"] = ((job["started_at"] or time.time()) - job["submitted_at"]) if job["state"] != "queued" \
        else time.time() - job["submitted_at"]
    out["run_s"] = ((job["ended_at"] or time.time()) - job["started_at"]) if job.get("started_at") else None
    return out


# ---- submitting -----------------------------------------------------------------------------------------

def _parse_env(pairs: list[str]) -> dict:
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum():
            raise usage(f"--env {pair!r} is not NAME=value")
        env[key] = value
    return env


def spawn(repo, command: list[str], name: str | None = None, cwd: str | None = None, worktree: str | None = None,
          claim_id: str | None = None, timeout: str | None = None, env: list[str] | None = None,
          executor: str | None = None) -> dict:
    """Register a job and start it if a slot is free; past jobs.max_queue_depth, register nothing (exit 8)."""
    import secrets  # hashlib, hmac, random: 4 ms that read-only commands need not pay

    from agentkit import worktrees

    if not command or not command[0]:
        raise usage("spawn needs a command after --", "for example: agentkit spawn -- claude -p 'fix the tests'")
    timeout = timeout if timeout is not None else repo.config["jobs.timeout"]
    timeout_s = durations.parse(timeout, "--timeout") if timeout else None
    grace_s = durations.parse(repo.config["jobs.grace"], "jobs.grace")
    overrides = _parse_env(env)
    executor = executor or repo.config["jobs.executor"]
    _executor(repo, executor)
    auto = worktree == "auto"
    if worktree and not auto:
        rows = repo.store.rows("SELECT path FROM worktrees WHERE slug = ?", (worktrees.validate_slug(worktree),))
        if not rows:
            raise not_found(f"unknown worktree {worktree!r}", f"create it with `agentkit worktree new {worktree}`")
        cwd = rows[0]["path"]
    if cwd is not None:
        cwd = str(Path(cwd).resolve())
        if not Path(cwd).is_dir():
            raise not_found(f"--cwd {cwd} is not a directory")
    if claim_id is not None and not repo.store.rows("SELECT 1 FROM claims WHERE claim_id = ? AND state = 'active'",
                                                     (claim_id,)):
        raise not_found(f"no active claim {claim_id!r}", "claim a task first: `agentkit claim --agent NAME`")
    from agentkit.state.files import atomic_write

    token = secrets.token_hex(12)
    atomic_write(env_file(repo, token), json.dumps({"base": dict(os.environ), "overrides": overrides}), mode=0o600)
    now = time.time()
    try:
        job_id = _register(repo, command, name, cwd, worktree, auto, claim_id, timeout_s, grace_s, executor, token,
                           now)
    except BaseException:
        env_file(repo, token).unlink(missing_ok=True)
        raise
    prune(repo, None)
    dispatch(repo, raise_for=job_id)
    return view(get(repo, job_id))


def _register(repo, command, name, cwd, worktree, auto, claim_id, timeout_s, grace_s, executor, token, now) -> int:
    with repo.store.tx() as conn:
        running = conn.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
        queued = conn.execute("SELECT count(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
        if running + queued >= repo.config["jobs.max_concurrency"] and queued >= repo.config["jobs.max_queue_depth"]:
            raise AgentkitError(f"queue full: {queued} jobs wait (jobs.max_queue_depth) behind {running} running",
                                "wait for jobs to finish (`agentkit health`), or raise jobs.max_queue_depth",
                                ExitCode.QUEUE_FULL)
        cur = conn.execute(
            "INSERT INTO jobs (name, state, command, cwd, worktree, worktree_auto, claim_id, timeout_s, grace_s, "
            "executor, token, log_path, submitted_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?)",
            (name or Path(command[0]).name, json.dumps(command), cwd or (None if auto else os.getcwd()),
             None if auto else worktree, int(auto), claim_id, timeout_s, grace_s, executor, token, now))
        job_id = cur.lastrowid
        log = jobs_dir(repo) / f"{job_id}.log"
        conn.execute("UPDATE jobs SET log_path = ? WHERE job_id = ?", (str(log), job_id))
        events.record(conn, "job.submitted", str(job_id), command=command, executor=executor)
    return job_id


def take_next(repo) -> dict | None:
    """Reserve a slot for the oldest queued job (FIFO), if the concurrency limit allows. One transaction."""
    with repo.store.tx() as conn:
        running = conn.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
        if running >= repo.config["jobs.max_concurrency"]:
            return None
        row = conn.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY job_id LIMIT 1").fetchone()
        if row is None:
            return None
        conn.execute("UPDATE jobs SET state = 'running', dispatched_at = ? WHERE job_id = ? AND state = 'queued'",
                     (time.time(), row["job_id"]))
        events.record(conn, "job.dispatched", str(row["job_id"]))
        return _get(conn, row["job_id"])


def dispatch(repo, inline_local: bool = False, raise_for: int | None = None) -> dict | None:
    """Start queued jobs while slots are free. With `inline_local`, hand back the first local job instead of
    launching a new supervisor for it: the calling supervisor runs it (a freed slot is reused at once).
    A job whose executor cannot start it is recorded as failed; for job `raise_for` the error is raised too,
    after the other queued jobs had their turn."""
    error = None
    while True:
        job = take_next(repo)
        if job is None:
            if error is not None:
                raise error
            return None
        if inline_local and job["executor"] == "local":
            return job
        try:
            _executor(repo, job["executor"]).submit(repo, job)
        except AgentkitError as exc:
            finish(repo, job["job_id"], "failed", reason=f"executor {job['executor']}: {exc.message}")
            if job["job_id"] == raise_for:
                error = exc


# ---- running (called by the executor) ---------------------------------------------------------------------

def job_env(repo, job: dict) -> dict:
    """The spawner's environment, the worktree's env file, --env pairs, and the job's own identity."""
    try:
        saved = json.loads(env_file(repo, job["token"]).read_text())
    except (OSError, ValueError):
        saved = {"base": dict(os.environ), "overrides": {}}
    env = dict(saved["base"])
    if job.get("worktree"):
        rows = repo.store.rows("SELECT env_file FROM worktrees WHERE slug = ?", (job["worktree"],))
        if rows and rows[0]["env_file"] and Path(rows[0]["env_file"]).is_file():
            for line in Path(rows[0]["env_file"]).read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.startswith("#"):
                    env[key] = value
    env.update(saved["overrides"])
    env.update(AGENTKIT_JOB_ID=str(job["job_id"]), AGENTKIT_JOB_TOKEN=job["token"], PYTHONUNBUFFERED="1")
    return env


def prepare_worktree(repo, job: dict) -> dict:
    """For `--worktree auto`: a fresh worktree job-<id> (the git lock is held only while it is made)."""
    from agentkit import worktrees

    wt = worktrees.new(repo, f"job-{job['job_id']}")
    with repo.store.tx() as conn:
        conn.execute("UPDATE jobs SET worktree = ?, cwd = ? WHERE job_id = ?", (wt["slug"], wt["path"],
                                                                               job["job_id"]))
    return {**job, "worktree": wt["slug"], "cwd": wt["path"]}


def checked_in(repo, job_id: int, supervisor_pid: int, supervisor_started: float | None) -> None:
    with repo.store.tx() as conn:
        conn.execute("UPDATE jobs SET supervisor_pid = ?, supervisor_started = ? WHERE job_id = ?",
                     (supervisor_pid, supervisor_started, job_id))


def started(repo, job_id: int, pid: int | None, pid_started: float | None, supervisor_pid: int,
            supervisor_started: float | None) -> None:
    with repo.store.tx() as conn:
        conn.execute("UPDATE jobs SET pid = ?, pid_started = ?, supervisor_pid = ?, supervisor_started = ?, "
                     "started_at = ? WHERE job_id = ?",
                     (pid, pid_started, supervisor_pid, supervisor_started, time.time(), job_id))
        events.record(conn, "job.started", str(job_id), pid=pid)


def finish(repo, job_id: int, state: str, exit_code: int | None = None, signal: int | None = None,
           reason: str | None = None) -> dict:
    """Record how a job ended, once (a second call changes nothing). Its claim is released with the matching
    outcome and its `auto` worktree removed (unless it has commits to keep) first, so whoever sees the job
    finished also sees those done."""
    job = get(repo, job_id)
    if job["state"] not in ("queued", "running"):
        return job
    _release_resources(repo, job, state, exit_code, reason)
    with repo.store.tx() as conn:
        done = conn.execute("UPDATE jobs SET state = ?, exit_code = ?, signal = ?, reason = ?, ended_at = ? "
                            "WHERE job_id = ? AND state IN ('queued', 'running')",
                            (state, exit_code, signal, reason, time.time(), job_id)).rowcount
        if done:
            events.record(conn, f"job.{state}", str(job_id), exit_code=exit_code, signal=signal, reason=reason)
        job = _get(conn, job_id)
    return job


def _release_resources(repo, job: dict, state: str, exit_code: int | None, reason: str | None) -> None:
    """What a job held, given back: its claim (with the outcome its end implies), its `auto` worktree unless
    that has commits, and its saved environment."""
    from agentkit import claims

    job_id = job["job_id"]
    if job["claim_id"]:
        try:
            claims.release(repo, job["claim_id"], outcome="pass" if state == "succeeded" else "fail",
                           reason=None if state == "succeeded" else f"job {job_id} {state}: {reason or exit_code}")
        except AgentkitError:
            pass  # the claim expired or was released by hand meanwhile; its fence keeps the task safe
    if job["worktree_auto"] and job["worktree"]:
        release_auto_worktree(repo, job)
    env_file(repo, job["token"]).unlink(missing_ok=True)


def release_auto_worktree(repo, job: dict) -> bool:
    """Remove a job's `auto` worktree unless it has commits (or changes) to keep."""
    from agentkit import git, worktrees

    rows = repo.store.rows("SELECT * FROM worktrees WHERE slug = ?", (job["worktree"],))
    if not rows:
        return False
    row = rows[0]
    head = git.rev(row["branch"], repo.root)
    if head and head != row["base_commit"]:
        return False
    try:
        worktrees.remove(repo, row["slug"], ending_job=job["job_id"])
        return True
    except AgentkitError:
        return False


# ---- reading and controlling -----------------------------------------------------------------------------

def list_jobs(repo, state: str | None = None) -> list[dict]:
    if state is not None and state not in STATES:
        raise usage(f"unknown state {state!r}", f"choose one of: {', '.join(STATES)}")
    sql = "SELECT * FROM jobs" + (" WHERE state = ?" if state else "") + " ORDER BY job_id"
    return [view(_job(r)) for r in repo.store.conn.execute(sql, (state,) if state else ())]


def wait(repo, job_ids: list[int], any_: bool = False, poll_s: float = 0.05, timeout: float | None = None) -> dict:
    """Block until the jobs finish (or the first of them, with `any_`); give up after `timeout` seconds."""
    for job_id in job_ids:
        get(repo, job_id)
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        jobs = [get(repo, j) for j in job_ids]
        done = [j for j in jobs if j["state"] in FINISHED]
        if (any_ and done) or len(done) == len(jobs):
            if any_:
                status = exit_status(min(done, key=lambda j: j["ended_at"] or 0))
            else:  # all: the first non-zero status, in the order given
                status = next((exit_status(j) for j in jobs if exit_status(j)), 0)
            return {"schema_version": SCHEMA_VERSION, "jobs": [view(j) for j in jobs], "exit_status": status}
        if deadline and time.monotonic() > deadline:
            raise AgentkitError(f"jobs {job_ids} still not finished after {timeout:g}s",
                                "see `agentkit jobs list`; `agentkit reap` repairs jobs whose supervisor died")
        time.sleep(poll_s)


def kill(repo, job_ids: list[int], grace: str | None = None) -> dict:
    """Stop jobs: a queued one never starts; a running one gets TERM, `grace`, then KILL for its whole tree."""
    grace_s = durations.parse(grace, "--grace") if grace else None
    out = []
    for job_id in job_ids:
        get(repo, job_id)
    for job_id in job_ids:
        with repo.store.tx() as conn:
            job = _get(conn, job_id)
            if job["state"] == "running":
                conn.execute("UPDATE jobs SET kill_requested_at = ?, kill_grace_s = ? WHERE job_id = ?",
                             (time.time(), grace_s if grace_s is not None else job["grace_s"], job_id))
        if job["state"] == "queued":  # it never starts: one conditional update, so no supervisor can take it
            with repo.store.tx() as conn:
                won = conn.execute("UPDATE jobs SET state = 'killed', signal = ?, reason = 'killed while queued', "
                                   "ended_at = ? WHERE job_id = ? AND state = 'queued'",
                                   (int(SIGTERM), time.time(), job_id)).rowcount
                if won:
                    events.record(conn, "job.killed", str(job_id), reason="killed while queued")
            if won:
                _release_resources(repo, job, "killed", None, "killed while queued")
            else:
                job = get(repo, job_id)  # dispatched meanwhile: stop it as a running job
        if job["state"] == "running":
            job = _get(repo.store.conn, job_id)
            _executor(repo, job["executor"]).kill(repo, job, job["kill_grace_s"])
        out.append(view(get(repo, job_id)))
    return {"schema_version": SCHEMA_VERSION, "jobs": out}


def prune(repo, older_than: str | None) -> dict:
    """Forget finished jobs past the TTL (jobs.ttl, or `older_than`) and delete their logs."""
    age = durations.parse(older_than or repo.config["jobs.ttl"], "--older-than")
    cutoff = time.time() - age
    with repo.store.tx() as conn:
        rows = conn.execute("SELECT job_id, log_path, token FROM jobs WHERE state IN ('succeeded', 'failed', "
                            "'timed_out', 'killed') AND ended_at < ?", (cutoff,)).fetchall()
        conn.executemany("DELETE FROM jobs WHERE job_id = ?", [(r["job_id"],) for r in rows])
        if rows:
            events.record(conn, "job.pruned", None, jobs=[r["job_id"] for r in rows])
    for r in rows:
        Path(r["log_path"]).unlink(missing_ok=True)
        env_file(repo, r["token"]).unlink(missing_ok=True)
    return {"schema_version": SCHEMA_VERSION, "pruned": [r["job_id"] for r in rows]}


def health(repo) -> dict:
    conn = repo.store.conn
    counts = dict(conn.execute("SELECT state, count(*) FROM jobs WHERE state IN ('queued', 'running') "
                               "GROUP BY state").fetchall())
    oldest = conn.execute("SELECT min(submitted_at) FROM jobs WHERE state = 'queued'").fetchone()[0]
    capacity = repo.config["jobs.max_concurrency"]
    active = counts.get("running", 0)
    return {"schema_version": SCHEMA_VERSION, "busy": active >= capacity, "active": active,
            "queued": counts.get("queued", 0), "capacity": capacity,
            "max_queue_depth": repo.config["jobs.max_queue_depth"],
            "oldest_queued_wait_s": round(time.time() - oldest, 3) if oldest else None}


def reap(repo) -> dict:
    """Make job state true again: runners that died, timeouts nobody enforced, auto worktrees left behind,
    queued jobs with free slots. Idempotent; every change is one conditional update."""
    now = time.time()
    found = executors(repo)
    dead, overdue, worktrees_released = [], [], []
    for job in [_job(r) for r in repo.store.conn.execute("SELECT * FROM jobs WHERE state = 'running'")]:
        runner = found.get(job["executor"])
        if runner is None:
            continue  # its plugin is not loaded here: leave the job to a process that has it
        if not runner.poll(repo, job)["alive"]:
            left = procs.with_token(job["token"])
            procs.terminate(left, 2)
            what = (f"its runner (pid {job['supervisor_pid']}) died" if job["supervisor_pid"]
                    else "its runner never started")
            finish(repo, job["job_id"], "failed", reason=f"{what}; {len(left)} orphaned process(es) killed")
            dead.append(job["job_id"])
        elif job["timeout_s"] and job["started_at"] and now - job["started_at"] > job["timeout_s"] + job["grace_s"] + 5:
            with repo.store.tx() as conn:
                conn.execute("UPDATE jobs SET kill_requested_at = ?, kill_grace_s = ? WHERE job_id = ?",
                             (now, job["grace_s"], job["job_id"]))
            runner.kill(repo, _get(repo.store.conn, job["job_id"]), job["grace_s"])
            overdue.append(job["job_id"])
    for job in [_job(r) for r in repo.store.conn.execute(
            "SELECT j.* FROM jobs j JOIN worktrees w ON w.slug = j.worktree "
            "WHERE j.worktree_auto = 1 AND j.state IN ('succeeded', 'failed', 'timed_out', 'killed')")]:
        if release_auto_worktree(repo, job):
            worktrees_released.append(job["worktree"])
    dispatch(repo)
    return {"schema_version": SCHEMA_VERSION, "dead_supervisors": dead, "timed_out": overdue,
            "worktrees_released": worktrees_released}
