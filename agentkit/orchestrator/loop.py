"""The run itself: set-up, the loop that starts and settles agents, stopping, and the summary; the events it
records and hands to its caller."""

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from agentkit import claims, events, git, integration, jobs, presets, prompts, tasks, worktrees
from agentkit.errors import AgentkitError, ExitCode, usage
from agentkit.orchestrator.options import (
    CODING_POOL,
    DUMP_EVERY_S,
    HELPERS,
    INTERRUPTED,
    REFRESH_EVERY_S,
    SCHEMA_VERSION,
    STOP_GRACE_S,
    TAIL_EVERY_S,
    TESTING_POOL,
    WAKE_EVERY_S,
    Options,
)
from agentkit.orchestrator.settling import Settling
from agentkit.orchestrator.starting import Starting


class Run(Starting, Settling):
    """One `agentkit run`. `on_event(event)` gets each event the run records (id-less dicts: kind, subject, ts,
    data); `request_stop()` (from a signal handler) ends it: agents killed, claims released, summary returned."""

    def __init__(self, repo, opts: Options, on_event=None):
        self.repo, self.opts = repo, opts
        self.on_event = on_event or (lambda event: None)
        self.stop_requested = False
        self.agents: dict[int, dict] = {}  # agent_id -> its run_agents row, while unsettled
        self.testing_credits = 0
        self.paused_until: dict[str, float] = {}  # preset -> no new agent of it before
        self.login: dict | None = None
        self.init_ran = False
        self.named = 0
        self.failed_starts = 0  # in a row: new coding agents wait 1, 2, 4 … s (at most 30) after the last one
        self.starts_after = 0.0
        self.integrated: list[dict] = []
        self.free_testing: list[str] = []  # testing worktrees to reuse
        self.spares: list[str] = []  # passed tasks' clean worktrees, recycled for the next tasks
        self.log_offsets: dict[int, int] = {}
        self.started = time.time()
        self.run_id: int | None = None
        self.log = logging.getLogger(f"agentkit.run.{os.getpid()}.{id(self)}")
        self.log_path: Path | None = None
        import threading
        from concurrent.futures import ThreadPoolExecutor

        # coding agents are started (worktree, prompt, job) by helper threads, each with its own Repo: the loop
        # goes on settling ended agents meanwhile, and git's processes of two starts overlap
        self.helpers = ThreadPoolExecutor(max_workers=HELPERS, thread_name_prefix="agentkit-run")
        self._local = threading.local()
        self._thread_repos: list = []

    def request_stop(self) -> None:
        """Stop claiming; the loop then kills the agents and releases their claims (safe in a signal handler)."""
        self.stop_requested = True

    # ---- set up -------------------------------------------------------------------------------------------

    def _preset(self):
        found = presets.get(self.repo, self.opts.agent)
        templates = {"coding": self.opts.agent_cmd, "testing": self.opts.testing_cmd, "init": self.opts.init_cmd}
        return presets.Overridden(found, templates) if any(templates.values()) else found

    def _check_templates(self, preset) -> None:
        """Every template this run will use renders, and its program is there: before anything is claimed."""
        sample = {"task_id": "1", "task_name": "x", "prompt_file": "p", "worktree": ".", "claim_id": "c",
                  "model": self.opts.model, "attempt": "1"}
        hint = getattr(preset, "install_hint", None)
        argv = preset.command("coding", sample)
        presets.check_binary(getattr(preset, "binary", None) or argv[0], self.opts.agent, hint)
        if self.testing_on:
            try:
                argv = preset.command("testing", sample)
            except AgentkitError:
                self.testing_on = False
                self.opts.warnings.append("no testing template (--testing-cmd): no testing agents this run")
            else:  # a testing command that cannot start would fail every passing task's re-check
                presets.check_binary(argv[0], self.opts.agent, hint)
        if self.opts.init_cmd or self.opts.spec:
            try:
                argv = preset.command("init", sample)
            except AgentkitError:
                return  # said when the graph turns out empty
            presets.check_binary(argv[0], self.opts.agent, hint)

    def _open_log(self) -> None:
        folder = self.repo.paths.agents / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / f"run-{time.strftime('%Y%m%dT%H%M%S')}-{self.run_id}.log"
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False

    def _hold_run_lock(self) -> None:
        """One run per repository: a second would adopt the first one's agents. The kernel drops the lock when
        the run dies, however it dies."""
        from contextlib import ExitStack

        from agentkit.errors import StateError
        from agentkit.state.locks import holder, named_lock

        self._hold = ExitStack()
        try:
            self._hold.enter_context(named_lock(self.repo.paths.agents, "run", timeout=0.2))
        except StateError:
            held = holder(self.repo.paths.agents, "run") or "?"
            raise AgentkitError(f"another `agentkit run` (pid {held}) is running in this repository",
                                "wait for it to end, or stop it (Ctrl-C, or kill it): a new `agentkit run` then "
                                "adopts its agents", ExitCode.LOCK_TIMEOUT) from None

    def _setup(self) -> None:
        repo, opts = self.repo, self.opts
        self._hold_run_lock()
        if opts.max_attempts is not None:  # for this process, and through the environment for its agents,
            repo.config.set("tasks.max_attempts", opts.max_attempts, "--max-attempts")  # supervisors, threads
            os.environ["AGENTKIT_TASKS_MAX_ATTEMPTS"] = str(opts.max_attempts)
        self.testing_on = not opts.yolo and opts.testing_ratio > 0
        self.preset = self._preset()
        self._check_templates(self.preset)
        if opts.into:
            self.into = integration.ensure(repo, opts.into)
        self.git_env = git.identity_env(repo.root)
        self.base = None if opts.into else git.head_commit(repo.root)
        self.testing_pool = CODING_POOL if opts.count_testing else TESTING_POOL
        jobs.set_pool(repo, CODING_POOL, opts.concurrency)
        if not opts.count_testing:
            jobs.set_pool(repo, TESTING_POOL, max(opts.max_total - opts.concurrency, 1))
            if opts.max_total - opts.concurrency < 1:
                self.testing_on = False
        worktrees.exclude(repo, prompts.FILE)
        jobs.warm(repo, opts.concurrency, opts.executor)  # its runners start while the first worktrees are made
        from agentkit import procs

        with repo.store.tx() as conn:
            cur = conn.execute("INSERT INTO runs (pid, pid_started, options, started_at) VALUES (?, ?, ?, ?)",
                               (os.getpid(), procs.start_time(os.getpid()), json.dumps(asdict(opts)), self.started))
            self.run_id = cur.lastrowid
        self._open_log()
        self.log.info("run %s started: %s", self.run_id, json.dumps(asdict(opts)))
        self._emit("run.started", str(self.run_id), options=asdict(opts))
        for warning in opts.warnings:
            self._emit("run.warning", str(self.run_id), message=warning)
        recovered = jobs.recover_lost(repo)
        expired = claims.recover_expired(repo)["expired_claims"]
        self.log.info("recovered: %s; expired claims: %s", json.dumps(recovered), json.dumps(expired))
        self._adopt()

    def _adopt(self) -> None:
        """Agents an earlier run left: running ones are ours now, ended ones are settled, never-started ones
        give their claim back (no attempt burned)."""
        known = {r["claim_id"] for r in self.repo.store.rows("SELECT claim_id FROM run_agents WHERE claim_id IS NOT "
                                                             "NULL AND settled_at IS NULL")}
        for claim_id in claims.active_ids(self.repo, "run%/%"):
            if claim_id not in known:  # claimed by a run that died before it recorded the agent
                self._give_back({"claim_id": claim_id}, "its run died before starting its agent")
        for row in self.repo.store.rows("SELECT * FROM run_agents WHERE settled_at IS NULL ORDER BY agent_id"):
            if row["job_id"] is None:
                job = jobs.named(self.repo, row["name"])  # its run died between submitting it and noting it
                if job is None:
                    self._give_back(row, "its run died before starting it")
                    self._mark_settled(row, "not started")
                    continue
                row["job_id"], row["worktree"] = job["job_id"], job["worktree"]
                row["branch"] = (worktrees.find(self.repo, job["worktree"]) or {}).get("branch")
                with self.repo.store.tx() as conn:
                    conn.execute("UPDATE run_agents SET job_id = ?, worktree = ?, branch = ? WHERE agent_id = ?",
                                 (row["job_id"], row["worktree"], row["branch"], row["agent_id"]))
            self.agents[row["agent_id"]] = row
            self.log.info("adopted agent %s (job %s, task %s) of run %s", row["name"], row["job_id"],
                          row["task_id"], row["run_id"])
            self._emit("agent_update", str(row["job_id"]), state="adopted", kind=row["kind"], task_id=row["task_id"],
                       agent=row["name"], from_run=row["run_id"])

    # ---- events ---------------------------------------------------------------------------------------------

    def _emit(self, kind: str, subject: str | None, /, **data) -> None:
        with self.repo.store.tx() as conn:
            events.record(conn, kind, subject, run_id=self.run_id, **data)
        self.on_event({"ts": time.time(), "kind": kind, "subject": subject, "data": {"run_id": self.run_id, **data}})

    def _notify(self, kind: str, message: str, /, **data) -> None:
        event = {"kind": kind, "ts": time.time(), "run_id": self.run_id, "message": message, **data}
        self._emit(f"run.{kind}", str(self.run_id), message=message, **data)
        try:
            self.repo.hook.notify(event=event, config=self.repo.config)
        except Exception as exc:  # noqa: BLE001 - a notifier's failure must not stop the run
            self.log.info("notify %s failed: %r", kind, exc)

    def _tail_logs(self) -> None:
        """Each running agent's new output lines, as `log` events attributed to it."""
        batch = []
        for row in self.agents.values():
            job_id = row["job_id"]
            if job_id is None:
                continue
            path = jobs.log_file(self.repo, job_id)
            offset = self.log_offsets.get(job_id, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(65536)
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            if not complete and len(chunk) == 65536:  # one line longer than a read: passed on cut
                complete = chunk
            if not complete:
                continue
            self.log_offsets[job_id] = offset + len(complete)
            lines = complete.decode(errors="replace").splitlines()
            if len(lines) > 50:  # a burst: its last lines, and how many were left out
                lines = [f"… {len(lines) - 50} more lines in its job log"] + lines[-50:]
            for line in lines:
                batch.append((str(job_id), {"line": line[:2000], "agent": row["name"], "kind": row["kind"],
                                            "task_id": row["task_id"]}))
        if batch:
            with self.repo.store.tx() as conn:
                for subject, data in batch:
                    events.record(conn, "log", subject, run_id=self.run_id, **data)
            for subject, data in batch:
                self.on_event({"ts": time.time(), "kind": "log", "subject": subject,
                               "data": {"run_id": self.run_id, **data}})

    # ---- the loop -------------------------------------------------------------------------------------------

    def _paused(self) -> bool:
        return time.time() < self.paused_until.get(self.opts.agent, 0)

    def _fill(self, limit: int) -> int:
        """Start up to `limit` agents while places are free: coding first, then testing. Each coding slot has
        one agent queued behind the running one, so its supervisor starts the next at once when one ends. The
        loop settles ended agents between batches, so a start never keeps a pass waiting long."""
        if self.stop_requested or self.login or self._paused():
            return 0
        started = 0
        coding_room = 2 * self.opts.concurrency if time.time() >= self.starts_after else 0
        while started < limit and self._active("coding") < coding_room and self._start_coding():
            started += 1
        testing_room = (self.opts.max_total - self.opts.concurrency) if not self.opts.count_testing else \
            max(self.opts.concurrency - self._active("coding"), 0)
        while started < limit and self.testing_on and self.testing_credits > 0 \
                and self._active("testing") < testing_room and self._start_testing():
            started += 1
        return started

    def _wait(self, timeout: float) -> None:
        conn = self.repo.store.conn
        seen = conn.execute("PRAGMA data_version").fetchone()[0]
        deadline = time.monotonic() + timeout
        while not self.stop_requested and time.monotonic() < deadline:
            time.sleep(WAKE_EVERY_S)
            if conn.execute("PRAGMA data_version").fetchone()[0] != seen:
                return

    def _heartbeat_queued(self) -> None:
        """A queued agent's claim is renewed by the run (a running one's by its supervisor)."""
        found = jobs.get_many(self.repo, [a["job_id"] for a in self.agents.values() if a.get("claim_id")
                                          and a["job_id"] is not None])
        queued = {job_id for job_id, job in found.items() if job["state"] == "queued"}
        for row in self.agents.values():
            if row["job_id"] in queued:
                try:
                    claims.heartbeat(self.repo, row["claim_id"])
                except AgentkitError:
                    pass

    def _dump(self) -> None:
        counts = tasks.counts(self.repo)
        self.log.info("state: tasks %s; agents %s; testing credits %s; paused %s", json.dumps(counts),
                      json.dumps([{k: a[k] for k in ("name", "job_id", "task_id")} for a in self.agents.values()]),
                      self.testing_credits, json.dumps(self.paused_until))

    def execute(self) -> dict:
        try:
            return self._execute()
        finally:
            self.helpers.shutdown(wait=True)
            self._thread_repos.clear()  # a connection closes in its own thread only: these go with the threads
            if hasattr(self, "_hold"):
                self._hold.close()
            for handler in list(self.log.handlers):
                handler.close()
                self.log.removeHandler(handler)

    def _execute(self) -> dict:
        self._setup()
        if not sum(tasks.counts(self.repo).values()) and not self.agents and (self.opts.init_cmd or self.opts.spec):
            if not self._has_init():
                raise usage(f"preset {self.opts.agent!r} has no initializer", "give --init-cmd TEMPLATE")
            self._start_init()
        next_refresh = next_dump = next_beat = time.monotonic()
        beat_every = min(claims.lease_of(self.repo, {"lease_s": None}) / 3, 60)
        next_tail = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_tail:
                self._tail_logs()
                next_tail = now + TAIL_EVERY_S
            settled = self._collect() + self._settle_ended()
            if self.stop_requested:
                break
            started = 0
            if not any(a["kind"] == "init" for a in self.agents.values()):  # nothing is claimed before it ends
                before = self._active("coding")
                started = self._fill_safely()
                if started:
                    self.log.info("spawn batch: %s started (%s free coding places before, %s ready after); "
                                  "%s agents active", started, 2 * self.opts.concurrency - before,
                                  tasks.ready_count(self.repo), len(self.agents))
            if not self.agents:
                held = max(self.paused_until.get(self.opts.agent, 0), self.starts_after) - time.time()
                if held > 0 and not self.login and tasks.ready_count(self.repo):
                    self._wait(min(held, 60))  # a rate limit, or a back-off after failed starts
                    continue
                break
            now = time.monotonic()
            if now >= next_refresh:
                jobs.refresh(self.repo, [a["job_id"] for a in self.agents.values() if a["job_id"] is not None])
                next_refresh = now + REFRESH_EVERY_S
            if now >= next_beat:
                self._heartbeat_queued()
                next_beat = now + beat_every
            if now >= next_dump:
                self._dump()
                next_dump = now + DUMP_EVERY_S
            if not (started or settled) and not self._trim_spares():
                self._wait(min(1.0, max(next_tail - time.monotonic(), WAKE_EVERY_S)))
        if self.stop_requested:
            self._shutdown()
        for slug in self.free_testing + self.spares:  # worktrees kept for reuse go with the run
            self._release_worktree(slug, None)
        return self._finish()

    def _has_init(self) -> bool:
        try:
            self.preset.command("init", {"model": self.opts.model})
            return True
        except AgentkitError:
            return False

    def _fill_safely(self) -> int:
        """Start what can start; a failure to start one agent (a full band, a full queue) is reported and the run
        goes on with the agents it has, unless it has none."""
        try:
            return self._fill(limit=2)
        except AgentkitError as exc:
            self._start_failed(exc)
            return 0

    def _shutdown(self) -> None:
        """Ctrl-C or SIGTERM: stop claiming, kill the agents' trees, release their claims (no attempt burned)."""
        self.helpers.shutdown(wait=True)  # agents being started are started, then stopped with the others
        self._collect()
        ids = [a["job_id"] for a in self.agents.values() if a.get("job_id")]
        self.log.info("stopping: killing jobs %s", ids)
        if ids:
            try:
                jobs.kill(self.repo, ids, grace=f"{STOP_GRACE_S:g}s")
                # their supervisors kill the trees: wait for the ends, so no claim goes back while an agent lives
                jobs.wait(self.repo, ids, timeout=STOP_GRACE_S + 5)
            except AgentkitError as exc:
                self.log.info("stopping: %s", exc.message)
        self._settle_ended()
        if self.agents:  # still alive after the grace: their claims stay, and the next run adopts them
            self.log.info("stopping: left to the next run: %s", [a["job_id"] for a in self.agents.values()])

    # ---- the end ----------------------------------------------------------------------------------------------

    def _finish(self) -> dict:
        status = claims.task_status(self.repo)
        counts = status["counts"]
        dead = tasks.list_tasks(self.repo, "dead")
        if self.stop_requested:
            code, why = INTERRUPTED, "stopped: agents killed, their claims released"
        elif self.login:
            code, why = int(ExitCode.FAILED), f"agents not logged in: {self.login['hint']}"
        elif status["total"] == 0:
            code = int(ExitCode.NOTHING_READY)
            why = ("the initializer created no tasks" if self.init_ran else
                   "the task graph is empty: add tasks (`agentkit task import FILE`) or give --init-cmd")
        elif status["remaining"] == 0:
            code, why = int(ExitCode.OK), "every task passing"
        elif dead:
            code, why = int(ExitCode.FAILED), f"{len(dead)} task(s) dead; their dependents are blocked"
        else:
            code, why = int(ExitCode.NOTHING_READY), "nothing can progress"
        stuck = stuck_lines(self.repo) if code in (ExitCode.NOTHING_READY, ExitCode.FAILED) else []
        summary = {"schema_version": SCHEMA_VERSION, "run_id": self.run_id, "exit_code": code, "result": why,
                   "counts": counts, "total": status["total"],
                   "dead": [{"id": t["id"], "name": t["name"], "reason": t["reason"]} for t in dead],
                   "stuck": stuck, "into": self.opts.into, "integrated": self.integrated,
                   "usage": _usage(self.repo, "run_id = ?", (self.run_id,)),
                   "wall_s": round(time.time() - self.started, 3), "debug_log": str(self.log_path),
                   "warnings": self.opts.warnings}
        if self.opts.into:
            summary["take_it"] = f"git merge {self.opts.into}"
        if self.login:
            summary["login"] = self.login
        with self.repo.store.tx() as conn:
            conn.execute("UPDATE runs SET ended_at = ?, exit_code = ?, summary = ? WHERE run_id = ?",
                         (time.time(), code, json.dumps(summary), self.run_id))
        kind = "run_stalled" if code == ExitCode.NOTHING_READY else "run_finished"
        self._notify(kind, f"run {self.run_id}: {why}", exit_code=code, counts=counts, stuck=stuck)
        self.log.info("finished: %s", json.dumps(summary))
        return summary


def stuck_lines(repo) -> list[str]:
    """Each stuck task and what blocks it: `task 7 (ui) waits on 3 (dead after 3 attempts)`."""
    conn = repo.store.conn
    return tasks.stuck_lines(tasks.diagnose(conn, claims.holders(conn)))


def run(repo, opts: Options, on_event=None, runner: list | None = None) -> dict:
    """Run the graph to its end. `runner`, if given, gets the Run first (so a signal handler can stop it)."""
    r = Run(repo, opts, on_event)
    if runner is not None:
        runner.append(r)
    return r.execute()


def _usage(repo, where: str, params: tuple) -> dict:
    """Tokens and cost summed over the agents `where` selects, and how many agents that is."""
    row = repo.store.rows("SELECT sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
                          f"sum(cost_usd) AS cost_usd, count(*) AS agents FROM run_agents WHERE {where}", params)[0]
    return {k: v for k, v in row.items() if v is not None}


def usage_of_task(repo, task_id: int) -> dict:
    """What a task's coding agents spent, over all its attempts (`task show`)."""
    return _usage(repo, "task_id = ? AND kind = 'coding'", (task_id,))
