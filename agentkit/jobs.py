"""Agent jobs: registered in the state DB, run under a concurrency limit in FIFO order by an executor plugin."""

import json
import os
import time
from pathlib import Path
from signal import SIGTERM

from agentkit import durations, events, failpoints
from agentkit.errors import AgentkitError, ExitCode, not_found, usage

SCHEMA_VERSION = 1
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "timed_out", "killed")
STATES = (*ACTIVE, *FINISHED)
_ACTIVE_SQL = f"({', '.join(repr(s) for s in ACTIVE)})"
_FINISHED_SQL = f"({', '.join(repr(s) for s in FINISHED)})"
REFRESH_EVERY_S = 0.5  # how often `wait` asks executors where their jobs are


def jobs_dir(repo) -> Path:
    path = repo.paths.agents / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_file(repo, job_id: int) -> Path:
    """Where a job's output goes (stdout and stderr, interleaved)."""
    return jobs_dir(repo) / f"{job_id}.log"


def log_tail(path: Path | str, size: int) -> str:
    """The last `size` bytes of a job's log as text (a cut multi-byte character is replaced, not an error); ""
    when there is no log (yet)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(fh.seek(0, 2) - size, 0))
            return fh.read(size).decode(errors="replace")
    except OSError:
        return ""


ENV_SUFFIX = ".env.json"


def env_file(repo, token: str) -> Path:
    """The spawner's saved environment (0600), written in the transaction that registers the job and deleted
    when it ends (or, left by a killed spawn, by `reap` and `jobs prune`)."""
    return jobs_dir(repo) / f"{token}{ENV_SUFFIX}"


def _job(row) -> dict:
    job = dict(row)
    job["command"] = json.loads(job["command"])
    job["handle"] = json.loads(job["handle"]) if job.get("handle") else None
    return job


def _get(conn, job_id: int) -> dict:
    row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise not_found(f"unknown job {job_id}", "see `agentkit jobs list`")
    return _job(row)


def get(repo, job_id: int) -> dict:
    return _get(repo.store.conn, job_id)


def named(repo, name: str) -> dict | None:
    """The newest job registered under `name` (a spawner that died before noting the id finds its job so)."""
    row = repo.store.conn.execute("SELECT * FROM jobs WHERE name = ? ORDER BY job_id DESC LIMIT 1",
                                  (name,)).fetchone()
    return _job(row) if row else None


def get_many(repo, job_ids: list[int]) -> dict[int, dict]:
    """The jobs among `job_ids` that exist, by id (one query)."""
    if not job_ids:
        return {}
    marks = ",".join("?" * len(job_ids))
    rows = repo.store.conn.execute(f"SELECT * FROM jobs WHERE job_id IN ({marks})", list(job_ids)).fetchall()
    return {r["job_id"]: _job(r) for r in rows}


def executors(repo) -> dict:
    from agentkit.plugins import registered

    return registered(repo.hook.register_executors)


def _executor(repo, name: str):
    from agentkit.plugins import pick

    return pick(executors(repo), name, "executor")


def unheard(job: dict) -> bool:
    """Failed with no exit status: its runner was lost (a reboot, the OOM killer) or its command never started,
    so nothing is known of the command's own work."""
    return job["state"] == "failed" and job["exit_code"] is None and job["signal"] is None


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
          executor: str | None = None, pool: str | None = None, keep_claim: bool = False) -> dict:
    """Register a job and start it if a slot is free; past jobs.max_queue_depth, register nothing (exit 8).

    A job in a `pool` (see `set_pool`) waits for a slot of that pool instead of jobs.max_concurrency. With
    `keep_claim` its end leaves its claim as it is, for the spawner to settle (`agentkit run` merges first)."""
    import secrets  # hashlib, hmac, random: 4 ms that read-only commands need not pay

    from agentkit import claims, worktrees

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
        cwd = worktrees.get(repo, worktree)["path"]
    if cwd is not None:
        cwd = str(Path(cwd).resolve())
        if not Path(cwd).is_dir():
            raise not_found(f"--cwd {cwd} is not a directory")
    if claim_id is not None and not claims.is_active(repo, claim_id):
        raise not_found(f"no active claim {claim_id!r}", "claim a task first: `agentkit claim --agent NAME`")
    token = secrets.token_hex(12)
    saved = json.dumps({"base": dict(os.environ), "overrides": overrides})
    try:
        job_id = _register(repo, command, name, cwd, worktree, auto, claim_id, timeout_s, grace_s, executor, token,
                           saved, pool, keep_claim)
    except BaseException:
        env_file(repo, token).unlink(missing_ok=True)
        raise
    failpoints.reach("spawn:registered")
    prune(repo, None)
    dispatch(repo, raise_for=job_id)
    return view(get(repo, job_id))


def _register(repo, command, name, cwd, worktree, auto, claim_id, timeout_s, grace_s, executor, token, saved,
              pool=None, keep_claim=False) -> int:
    """Insert the job and save its environment in one transaction, so a sweep that holds the write lock
    (`sweep_env_files`) never mistakes a spawn in progress for a killed one."""
    from agentkit.state.files import atomic_write

    now = time.time()
    with repo.store.tx() as conn:
        running = conn.execute("SELECT count(*) FROM jobs WHERE state = 'running' AND pool IS ?", (pool,)).fetchone()[0]
        queued = conn.execute("SELECT count(*) FROM jobs WHERE state = 'queued' AND pool IS ?", (pool,)).fetchone()[0]
        if running + queued >= _limit(conn, repo, pool) and queued >= repo.config["jobs.max_queue_depth"]:
            raise AgentkitError(f"queue full: {queued} jobs wait (jobs.max_queue_depth) behind {running} running",
                                "wait for jobs to finish (`agentkit health`), or raise jobs.max_queue_depth",
                                ExitCode.QUEUE_FULL)
        cur = conn.execute(
            "INSERT INTO jobs (name, state, command, cwd, worktree, worktree_auto, claim_id, timeout_s, grace_s, "
            "executor, token, log_path, submitted_at, pool, keep_claim) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?)",
            (name or Path(command[0]).name, json.dumps(command), cwd or (None if auto else os.getcwd()),
             None if auto else worktree, int(auto), claim_id, timeout_s, grace_s, executor, token, now, pool,
             int(keep_claim)))
        job_id = cur.lastrowid
        log = log_file(repo, job_id)
        conn.execute("UPDATE jobs SET log_path = ? WHERE job_id = ?", (str(log), job_id))
        events.record(conn, "job.submitted", str(job_id), command=command, executor=executor)
        atomic_write(env_file(repo, token), saved, mode=0o600)
        failpoints.reach("spawn:env-saved")
    return job_id


def set_pool(repo, name: str, max_running: int) -> None:
    """A pool of jobs with a concurrency limit of its own (jobs.max_concurrency is the limit of jobs outside any)."""
    if max_running < 1:
        raise usage(f"a pool's limit must be at least 1, not {max_running}")
    with repo.store.tx() as conn:
        conn.execute("INSERT INTO job_pools (name, max_running) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                     "max_running = excluded.max_running", (name, max_running))
    dispatch(repo)  # a raised limit frees slots


def _limit(conn, repo, pool: str | None) -> int:
    if pool is not None:
        row = conn.execute("SELECT max_running FROM job_pools WHERE name = ?", (pool,)).fetchone()
        if row is not None:
            return row[0]
    return repo.config["jobs.max_concurrency"]


def warm(repo, count: int, executor: str | None = None) -> int:
    """Have the executor get `count` runners ready ahead of a burst of jobs, if it can (an optional `warm`
    method); how many it started."""
    runner = _executor(repo, executor or repo.config["jobs.executor"])
    return runner.warm(repo, count) if hasattr(runner, "warm") else 0


def take_next(repo) -> dict | None:
    """Reserve a slot for the oldest queued job (FIFO) whose pool (or jobs.max_concurrency, outside any pool)
    has one free. One transaction."""
    with repo.store.tx() as conn:
        running = dict(conn.execute("SELECT pool, count(*) FROM jobs WHERE state = 'running' GROUP BY pool"))
        row, full = None, set()
        for cand in conn.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY job_id"):
            pool = cand["pool"]
            if pool in full:
                continue
            if running.get(pool, 0) < _limit(conn, repo, pool):
                row = cand
                break
            full.add(pool)
        if row is None:
            return None
        conn.execute("UPDATE jobs SET state = 'running', dispatched_at = ? WHERE job_id = ? AND state = 'queued'",
                     (time.time(), row["job_id"]))
        events.record(conn, "job.dispatched", str(row["job_id"]))
        return _get(conn, row["job_id"])


def dispatch(repo, adopt=None, raise_for: int | None = None) -> dict | None:
    """Start queued jobs (FIFO) while slots are free, each through its executor's `submit`.

    `adopt(job)` lets a runner take a job itself instead (a local supervisor runs the next job of its
    executor, so a freed slot is reused at once): the first job it accepts is returned, already holding its
    slot. A job whose executor cannot start it is recorded as failed; for job `raise_for` the error is raised
    too, after the other queued jobs had their turn."""
    error = None
    while True:
        job = take_next(repo)
        if job is None:
            if error is not None:
                raise error
            return None
        if adopt is not None and adopt(job):
            return job
        failpoints.reach("dispatch:taken")
        try:
            handle = _executor(repo, job["executor"]).submit(repo, job)
        except AgentkitError as exc:
            finish(repo, job["job_id"], "failed", reason=f"executor {job['executor']}: {exc.message}")
            if job["job_id"] == raise_for:
                error = exc
            continue
        if handle is not None:
            with repo.store.tx() as conn:
                conn.execute("UPDATE jobs SET handle = ? WHERE job_id = ?", (json.dumps(handle), job["job_id"]))


# ---- running (called by the executor) ---------------------------------------------------------------------

def job_env(repo, job: dict) -> dict:
    """The spawner's environment, the worktree's env file, --env pairs, and the job's own identity."""
    try:
        saved = json.loads(env_file(repo, job["token"]).read_text())
    except (OSError, ValueError):
        saved = {"base": dict(os.environ), "overrides": {}}
    env = dict(saved["base"])
    if job.get("worktree"):
        from agentkit import worktrees

        env.update(worktrees.env_of(repo, job["worktree"]))
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


def checked_in(repo, job_id: int, supervisor_pid: int, supervisor_started: float | None,
               handle: dict | None = None) -> None:
    """A runner next to the DB took the job; `handle` (kept as job["handle"]) says where its processes live."""
    with repo.store.tx() as conn:
        conn.execute("UPDATE jobs SET supervisor_pid = ?, supervisor_started = ?, handle = coalesce(?, handle) "
                     "WHERE job_id = ?", (supervisor_pid, supervisor_started,
                                          json.dumps(handle) if handle is not None else None, job_id))


def started(repo, job_id: int, pid: int | None, pid_started: float | None, supervisor_pid: int | None,
            supervisor_started: float | None, at: float | None = None) -> None:
    """The job's command started (`at`, default now): its timeout clock runs from here."""
    with repo.store.tx() as conn:
        conn.execute("UPDATE jobs SET pid = ?, pid_started = ?, supervisor_pid = ?, supervisor_started = ?, "
                     "started_at = ? WHERE job_id = ?",
                     (pid, pid_started, supervisor_pid, supervisor_started, at or time.time(), job_id))
        events.record(conn, "job.started", str(job_id), pid=pid)


def finish(repo, job_id: int, state: str, exit_code: int | None = None, signal: int | None = None,
           reason: str | None = None) -> dict:
    """Record how a job ended, once (a second call changes nothing). Its claim is released with the matching
    outcome and its `auto` worktree removed (unless it has commits to keep) first, so whoever sees the job
    finished also sees those done."""
    job = get(repo, job_id)
    if job["state"] not in ACTIVE:
        return job
    _release_resources(repo, job, state, exit_code, reason)
    failpoints.reach("finish:released")
    with repo.store.tx() as conn:
        done = conn.execute("UPDATE jobs SET state = ?, exit_code = ?, signal = ?, reason = ?, ended_at = ? "
                            f"WHERE job_id = ? AND state IN {_ACTIVE_SQL}",
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
    if job["claim_id"] and not job.get("keep_claim"):
        try:
            claims.release(repo, job["claim_id"], outcome="pass" if state == "succeeded" else "fail",
                           reason=None if state == "succeeded" else f"job {job_id} {state}: {reason or exit_code}")
        except AgentkitError:
            pass  # the claim expired or was released by hand meanwhile; its fence keeps the task safe
    elif job["claim_id"] and repo.config["jobs.kept_claim_lease"]:
        try:  # held for its spawner to settle, even one that died and comes back hours later (`agentkit run`)
            claims.heartbeat(repo, job["claim_id"], lease=repo.config["jobs.kept_claim_lease"])
        except AgentkitError:
            pass  # it ran out already, or was settled: nothing to hold
    if job["worktree_auto"] and job["worktree"]:
        release_auto_worktree(repo, job)
    env_file(repo, job["token"]).unlink(missing_ok=True)


def release_auto_worktree(repo, job: dict) -> bool:
    """Remove a job's `auto` worktree unless it has commits (or changes) to keep."""
    from agentkit import worktrees

    row = worktrees.find(repo, job["worktree"])
    if row is None or worktrees.has_new_commits(repo, row):
        return False
    try:
        worktrees.remove(repo, row["slug"], released_by=f"job {job['job_id']}")
        return True
    except AgentkitError:
        return False


def active_in(repo, slug: str) -> list[int]:
    """Queued and running jobs whose worktree is `slug`."""
    return [r["job_id"] for r in repo.store.rows(f"SELECT job_id FROM jobs WHERE worktree = ? AND state IN "
                                                 f"{_ACTIVE_SQL} ORDER BY job_id", (slug,))]


# ---- what executors report ---------------------------------------------------------------------------------

def _ending(job: dict, state: str) -> str:
    """A job that ended after agentkit asked for its kill reads as killed, or timed_out for a timeout."""
    if job["kill_requested_at"] and state != "succeeded":
        return "timed_out" if job["kill_reason"] == "timeout" else "killed"
    return state


def _request_kill(repo, job_id: int, grace_s: float, reason: str) -> dict:
    with repo.store.tx() as conn:
        conn.execute("UPDATE jobs SET kill_requested_at = ?, kill_grace_s = ?, kill_reason = ? WHERE job_id = ? "
                     "AND state = 'running'", (time.time(), grace_s, reason, job_id))
        return _get(conn, job_id)


def _record_poll(repo, runner, job: dict, report: dict, now: float) -> tuple[str, int] | None:
    """Record what one poll said; returns what changed (`lost`, `timed_out`, an end state) with how many
    orphaned processes were killed, or None."""
    state = report.get("state")
    if job["started_at"] is None and (report.get("started_at") or state in FINISHED):
        # an end seen before any start: it started when it was handed over, as far as anyone here knows
        started(repo, job["job_id"], report.get("pid"), None, job["supervisor_pid"], job["supervisor_started"],
                at=float(report.get("started_at") or job["dispatched_at"]))
        job = get(repo, job["job_id"])
    if report.get("log") and state in ("running", *FINISHED):  # an executor that tails a remote log
        with open(job["log_path"], "a") as fh:
            fh.write(report["log"])
    if state == "running":
        overdue = job["timeout_s"] and job["started_at"] and now - job["started_at"] > job["timeout_s"]
        if overdue and not getattr(runner, "enforces_timeout", False) and not job["kill_requested_at"]:
            job = _request_kill(repo, job["job_id"], job["grace_s"], "timeout")
            runner.kill(repo, job, job["grace_s"])
            after = runner.poll(repo, job)
            finish(repo, job["job_id"], "timed_out", exit_code=after.get("exit_code"), signal=after.get("signal"),
                   reason=f"timed out after {job['timeout_s']:g}s")
            return "timed_out", 0
        return None
    if state in FINISHED:
        finish(repo, job["job_id"], _ending(job, state), exit_code=report.get("exit_code"),
               signal=report.get("signal"), reason=report.get("reason"))
        return state, 0
    if get(repo, job["job_id"])["state"] != "running":  # its runner recorded the end just before it went
        return None
    left = runner.kill(repo, job, 2.0)
    reason = report.get("reason") or f"executor {job['executor']} lost it"
    if state != "lost":
        reason = f"executor {job['executor']} answered poll with {report!r}"
    finish(repo, job["job_id"], "failed", reason=f"{reason}; {left or 0} orphaned process(es) killed")
    return "lost", left or 0


def refresh(repo, job_ids: list[int] | None = None) -> dict[int, tuple[str, int]]:
    """Ask each running job's executor where it is (`poll`) and record what it reports: a start, an end, a
    lost runner (whatever is left is killed), a timeout the executor does not enforce itself. Jobs whose
    executor is not loaded here are left to a process that has it. Returns {job_id: (what changed, orphaned
    processes killed)}."""
    found = executors(repo)
    now = time.time()
    changed = {}
    sql = "SELECT * FROM jobs WHERE state = 'running'"
    rows = repo.store.conn.execute(sql).fetchall()
    for job in [_job(r) for r in rows if job_ids is None or r["job_id"] in job_ids]:
        runner = found.get(job["executor"])
        if runner is None:
            continue
        what = _record_poll(repo, runner, job, runner.poll(repo, job), now)
        if what is not None:
            changed[job["job_id"]] = what
    if changed:
        dispatch(repo)  # their slots are free
    return changed


# ---- reading and controlling -----------------------------------------------------------------------------

def list_jobs(repo, state: str | None = None) -> list[dict]:
    if state is not None and state not in STATES:
        raise usage(f"unknown state {state!r}", f"choose one of: {', '.join(STATES)}")
    sql = "SELECT * FROM jobs" + (" WHERE state = ?" if state else "") + " ORDER BY job_id"
    return [view(_job(r)) for r in repo.store.conn.execute(sql, (state,) if state else ())]


def wait(repo, job_ids: list[int], any_: bool = False, poll_s: float = 0.05, timeout: float | None = None) -> dict:
    """Block until the jobs finish (or the first of them, with `any_`); give up after `timeout` seconds.
    Every REFRESH_EVERY_S their executors are polled, so an outcome only `poll` knows is recorded too."""
    for job_id in job_ids:
        get(repo, job_id)
    deadline = time.monotonic() + timeout if timeout else None
    next_refresh = time.monotonic() + REFRESH_EVERY_S
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
                                "see `agentkit jobs list`; `agentkit reap` repairs jobs whose runner died")
        if time.monotonic() >= next_refresh:  # a queued one waits for any running job to end
            queued = any(j["state"] == "queued" for j in jobs)
            refresh(repo, None if queued else [j["job_id"] for j in jobs if j["state"] == "running"])
            next_refresh = time.monotonic() + REFRESH_EVERY_S
        time.sleep(poll_s)


def kill(repo, job_ids: list[int], grace: str | None = None) -> dict:
    """Stop jobs: a queued one never starts; a running one gets TERM, `grace`, then KILL for its whole tree."""
    grace_s = durations.parse(grace, "--grace") if grace else None
    out = []
    for job_id in job_ids:
        get(repo, job_id)
    for job_id in job_ids:
        job = get(repo, job_id)
        if job["state"] == "queued":  # it never starts: one conditional update, so no supervisor can take it
            with repo.store.tx() as conn:
                won = conn.execute("UPDATE jobs SET state = 'killed', signal = ?, reason = 'killed while queued', "
                                   "ended_at = ? WHERE job_id = ? AND state = 'queued'",
                                   (int(SIGTERM), time.time(), job_id)).rowcount
                if won:
                    events.record(conn, "job.killed", str(job_id), reason="killed while queued")
            if won:
                _release_resources(repo, job, "killed", None, "killed while queued")
            job = get(repo, job_id)  # killed, or dispatched meanwhile: then it is stopped as a running job
        if job["state"] == "running":
            job = _request_kill(repo, job_id, grace_s if grace_s is not None else job["grace_s"], "user")
            runner = _executor(repo, job["executor"])
            runner.kill(repo, job, job["kill_grace_s"])
            refresh(repo, [job_id])  # an executor that reports through poll has the outcome now
        out.append(view(get(repo, job_id)))
    return {"schema_version": SCHEMA_VERSION, "jobs": out}


def prune(repo, older_than: str | None) -> dict:
    """Forget finished jobs past the TTL (jobs.ttl, or `older_than`) and delete their logs; delete every saved
    environment that no queued or running job needs."""
    age = durations.parse(older_than or repo.config["jobs.ttl"], "--older-than")
    cutoff = time.time() - age
    with repo.store.tx() as conn:
        rows = conn.execute(f"SELECT job_id, log_path FROM jobs WHERE state IN {_FINISHED_SQL} "
                            "AND ended_at < ?", (cutoff,)).fetchall()
        conn.executemany("DELETE FROM jobs WHERE job_id = ?", [(r["job_id"],) for r in rows])
        if rows:
            events.record(conn, "job.pruned", None, jobs=[r["job_id"] for r in rows])
        swept = _sweep_env_files(repo, conn)
    for r in rows:
        Path(r["log_path"]).unlink(missing_ok=True)
    return {"schema_version": SCHEMA_VERSION, "pruned": [r["job_id"] for r in rows], "env_files_removed": swept}


def _sweep_env_files(repo, conn) -> int:
    """Delete saved environments that no queued or running job needs: those a spawn, a kill or a finish left
    when it was killed midway, and their temp files. Called inside a write transaction; a spawn writes its
    file inside its own, so none is half-registered while this runs."""
    active = {r[0] for r in conn.execute(f"SELECT token FROM jobs WHERE state IN {_ACTIVE_SQL}")}
    removed = 0
    for path in jobs_dir(repo).iterdir():
        name = path.name
        leftover_temp = name.startswith(".") and ENV_SUFFIX in name and name.endswith(".tmp")
        if leftover_temp or (name.endswith(ENV_SUFFIX) and name[:-len(ENV_SUFFIX)] not in active):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def sweep_env_files(repo) -> int:
    """`_sweep_env_files` in a transaction of its own; returns how many files it deleted."""
    with repo.store.tx() as conn:
        return _sweep_env_files(repo, conn)


def health(repo) -> dict:
    conn = repo.store.conn
    counts = dict(conn.execute(f"SELECT state, count(*) FROM jobs WHERE state IN {_ACTIVE_SQL} "
                               "GROUP BY state").fetchall())
    oldest = conn.execute("SELECT min(submitted_at) FROM jobs WHERE state = 'queued'").fetchone()[0]
    capacity = repo.config["jobs.max_concurrency"]
    active = counts.get("running", 0)
    return {"schema_version": SCHEMA_VERSION, "busy": active >= capacity, "active": active,
            "queued": counts.get("queued", 0), "capacity": capacity,
            "max_queue_depth": repo.config["jobs.max_queue_depth"],
            "oldest_queued_wait_s": round(time.time() - oldest, 3) if oldest else None,
            "executors": _executor_health(repo)}


def _executor_health(repo) -> dict:
    """What the configured executor, and those of running jobs, say of their backend (an optional `health`)."""
    names = {repo.config["jobs.executor"]} | {r["executor"] for r in repo.store.rows(
        "SELECT DISTINCT executor FROM jobs WHERE state = 'running'")}
    if names == {"local"}:
        return {}  # the local executor has nothing to add: no plugin is loaded for it
    found = executors(repo)
    return {name: found[name].health(repo) for name in sorted(names) if hasattr(found.get(name), "health")}


def recover_lost(repo) -> dict:
    """Make job state true again: runners that are gone (their leftovers killed), timeouts nobody enforced,
    `auto` worktrees left behind, saved environments nobody needs, queued jobs with free slots. Idempotent;
    every change is one conditional update."""
    changed = refresh(repo)
    lost = {job_id: killed for job_id, (what, killed) in changed.items() if what == "lost"}
    now = time.time()
    overdue = []
    found = executors(repo)
    # the backstop for executors that enforce timeouts themselves (a supervisor that slept through its deadline)
    for job in [_job(r) for r in repo.store.conn.execute("SELECT * FROM jobs WHERE state = 'running' AND "
                                                         "timeout_s IS NOT NULL AND started_at IS NOT NULL")]:
        runner = found.get(job["executor"])
        if runner is not None and now - job["started_at"] > job["timeout_s"] + job["grace_s"] + 5:
            job = _request_kill(repo, job["job_id"], job["grace_s"], "backstop")
            runner.kill(repo, job, job["grace_s"])
            overdue.append(job["job_id"])
    released = []
    for job in [_job(r) for r in repo.store.conn.execute(
            f"SELECT * FROM jobs WHERE worktree_auto = 1 AND worktree IS NOT NULL AND state IN {_FINISHED_SQL}")]:
        if release_auto_worktree(repo, job):
            released.append(job["worktree"])
    dispatch(repo)
    return {"schema_version": SCHEMA_VERSION, "dead_supervisors": list(lost), "orphans_killed": sum(lost.values()),
            "timed_out": overdue + [j for j, (what, _) in changed.items() if what == "timed_out"],
            "worktrees_released": released, "env_files_removed": sweep_env_files(repo)}
