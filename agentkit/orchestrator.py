"""`agentkit run`: coding and testing agents on the task graph, a thin loop over claims, worktrees, jobs and
integration. Owns the `runs` and `run_agents` tables; returns data and hands each event to the caller."""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentkit import claims, durations, events, git, integration, jobs, presets, prompts, tasks, worktrees
from agentkit.errors import AgentkitError, ExitCode, usage

SCHEMA_VERSION = 1
CODING_POOL, TESTING_POOL = "run:coding", "run:testing"
KINDS = ("coding", "testing", "init")
INTERRUPTED = 130  # the exit code of a run stopped by Ctrl-C or SIGTERM
LOG_TAIL = 8192  # what a preset's classify reads of an agent's log
WAKE_EVERY_S = 0.005  # how often the loop looks for a commit by another process (PRAGMA data_version)
REFRESH_EVERY_S = 2.0  # how often running jobs' executors are asked whether their runners live
DUMP_EVERY_S = 30.0  # a state dump in the debug log
TAIL_EVERY_S = 0.1  # how often agents' new output lines become `log` events
STOP_GRACE_S = 2.0  # TERM → KILL for the agents of a stopped run
HELPERS = 4  # threads that start agents beside the loop (their git processes overlap)


@dataclass
class Options:
    concurrency: int = 1
    testing_ratio: int = 1
    count_testing: bool = False
    yolo: bool = False
    agent: str = "shell"
    agent_cmd: str = ""
    testing_cmd: str = ""
    init_cmd: str = ""
    spec: str | None = None
    model: str = ""
    max_attempts: int | None = None
    timeout: str = "60m"
    init_timeout: str = "30m"
    into: str | None = integration.DEFAULT
    executor: str | None = None
    max_total: int = 0  # 0: 2 × concurrency
    warnings: list[str] = field(default_factory=list)


def options(repo, **given) -> Options:
    """Flags over config `run.*`: a value given as None falls back to the config."""
    cfg = repo.config
    defaults = {"concurrency": cfg["run.concurrency"], "testing_ratio": cfg["run.testing_ratio"],
                "agent": cfg["run.agent"], "agent_cmd": cfg["run.agent_cmd"], "testing_cmd": cfg["run.testing_cmd"],
                "init_cmd": cfg["run.init_cmd"], "model": cfg["run.model"], "timeout": cfg["run.timeout"],
                "init_timeout": cfg["run.init_timeout"], "into": cfg["run.into"], "max_total": cfg["run.max_total"],
                "max_attempts": None, "executor": None, "spec": None}
    values = {k: (given[k] if given.get(k) is not None else v) for k, v in defaults.items()}
    opts = Options(**values, count_testing=bool(given.get("count_testing")), yolo=bool(given.get("yolo")))
    if opts.into in ("", integration.NONE):
        opts.into = None
    if not 0 <= opts.testing_ratio <= 3:
        raise usage(f"--testing-ratio must be 0 to 3, not {opts.testing_ratio}")
    if opts.concurrency < 1:
        raise usage(f"--concurrency must be at least 1, not {opts.concurrency}")
    if opts.max_attempts is not None and opts.max_attempts < 1:
        raise usage(f"--max-attempts must be at least 1, not {opts.max_attempts}")
    ceiling = cfg["run.max_concurrency"]
    if opts.concurrency > ceiling:
        opts.warnings.append(f"-c {opts.concurrency} is above run.max_concurrency ({ceiling}) for this machine: "
                             f"running {ceiling} coding agents (raise run.max_concurrency to allow more)")
        opts.concurrency = ceiling
    opts.max_total = opts.max_total or 2 * opts.concurrency
    if opts.max_total < opts.concurrency:
        raise usage(f"run.max_total ({opts.max_total}) is below --concurrency ({opts.concurrency})")
    for name in ("timeout", "init_timeout"):
        if getattr(opts, name):
            durations.parse(getattr(opts, name), f"--{name.replace('_', '-')}")
    return opts


class Run:
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
        """Every template this run will use renders, and its binary is there: before anything is claimed."""
        sample = {"task_id": "1", "task_name": "x", "prompt_file": "p", "worktree": ".", "claim_id": "c",
                  "model": self.opts.model, "attempt": "1"}
        argv = preset.command("coding", sample)
        binary = getattr(preset, "binary", None) or argv[0]
        presets.check_binary(type("P", (), {"binary": binary, "install_hint": getattr(preset, "install_hint",
                                                                                     None)}), self.opts.agent)
        if self.testing_on:
            try:
                preset.command("testing", sample)
            except AgentkitError:
                self.testing_on = False
                self.opts.warnings.append("no testing template (--testing-cmd): no testing agents this run")

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
        from agentkit.state.locks import named_lock

        self._hold = ExitStack()
        try:
            self._hold.enter_context(named_lock(self.repo.paths.agents, "run", timeout=0.2))
        except StateError as exc:
            held = exc.message.rpartition("(held by pid ")[2].rstrip(")") if "held by pid" in exc.message else "?"
            raise AgentkitError(f"another `agentkit run` (pid {held}) is running in this repository",
                                "wait for it to end, or stop it (Ctrl-C, or kill it): a new `agentkit run` then "
                                "adopts its agents", ExitCode.LOCK_TIMEOUT) from None

    def _setup(self) -> None:
        repo, opts = self.repo, self.opts
        self._hold_run_lock()
        if opts.max_attempts is not None:
            repo.config.set("tasks.max_attempts", opts.max_attempts, "--max-attempts")
        self.testing_on = not opts.yolo and opts.testing_ratio > 0
        self.preset = self._preset()
        self._check_templates(self.preset)
        if opts.into:
            self.into = integration.ensure(repo, opts.into)
        self.git_env = git.identity_env(repo.root)
        self.base = None if opts.into else worktrees_base(repo)
        testing_pool = CODING_POOL if opts.count_testing else TESTING_POOL
        self.testing_pool = testing_pool
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
            path = jobs.jobs_dir(self.repo) / f"{job_id}.log"
            offset = self.log_offsets.get(job_id, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(65536)
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            if not complete:
                continue
            self.log_offsets[job_id] = offset + len(complete)
            for line in complete.decode(errors="replace").splitlines()[-50:]:
                batch.append((str(job_id), {"line": line[:2000], "agent": row["name"], "kind": row["kind"],
                                            "task_id": row["task_id"]}))
        if batch:
            with self.repo.store.tx() as conn:
                for subject, data in batch:
                    events.record(conn, "log", subject, run_id=self.run_id, **data)
            for subject, data in batch:
                self.on_event({"ts": time.time(), "kind": "log", "subject": subject,
                               "data": {"run_id": self.run_id, **data}})

    # ---- agents ---------------------------------------------------------------------------------------------

    def _active(self, kind: str) -> int:
        return sum(1 for a in self.agents.values() if a["kind"] == kind)

    def _new_agent(self, kind: str, task_id: int | None, claim: dict | None, attempt: int | None) -> dict:
        now = time.time()
        with self.repo.store.tx() as conn:
            cur = conn.execute("INSERT INTO run_agents (run_id, name, kind, preset, task_id, claim_id, fence, attempt, "
                               "created_at) VALUES (?, '', ?, ?, ?, ?, ?, ?, ?)",
                               (self.run_id, kind, self.opts.agent, task_id, claim and claim["claim_id"],
                                claim and claim["fence"], attempt, now))
            agent_id = cur.lastrowid
            name = f"run{self.run_id}/{kind}-{agent_id}"
            conn.execute("UPDATE run_agents SET name = ? WHERE agent_id = ?", (name, agent_id))
            return dict(conn.execute("SELECT * FROM run_agents WHERE agent_id = ?", (agent_id,)).fetchone())

    def _claim_name(self, kind: str) -> str:
        return f"run{self.run_id}/{kind}-{time.monotonic_ns()}"

    def _base_commit(self) -> str:
        return integration.head(self.repo, self.opts.into) if self.opts.into else self.base

    def _workspace(self, repo, slug: str, base: str, spare: str | None = None) -> tuple[dict, bool]:
        """The worktree `slug` at `base`: a spare one recycled, a new one, or (a retry) the same one started
        over; and whether a new one was made (the band changed)."""
        row = worktrees.find(repo, slug)
        if row is None and (worktrees.root_dir(repo) / slug).is_dir():  # left unrecorded by a killed run
            worktrees.up(repo, slug)
            row = worktrees.find(repo, slug)
        if row is None or not Path(row["path"]).is_dir():
            if row is not None:
                worktrees.remove(repo, slug, force=True)
            if spare is not None:  # a passed task's worktree, moved and reset: cheaper than remove + new
                try:
                    return {**worktrees.recycle(repo, spare, slug, base), "base": base}, False
                except AgentkitError as exc:
                    self.log.info("could not recycle %s for %s: %s", spare, slug, exc.message)
            made = worktrees.new(repo, slug, base=base)
            if git.rev(f"refs/heads/{made['branch']}", repo.root) == base:
                return {**made, "base": base}, True
        # a retry, or a branch kept from an earlier attempt: started over at the base, its work saved first
        worktrees.reset(repo, slug, base)
        return {**worktrees.get(repo, slug), "base": base}, row is None

    def _capacity_update(self) -> None:
        from agentkit import capacity

        band = capacity.status(self.repo, live=False)
        self._emit("capacity_update", None, current=band.get("current"), used=band.get("used"),
                   ceiling=band.get("ceiling"))

    def _prepare(self, repo, row: dict, kind: str, slug: str, base: str, spare: str | None, prompt, values: dict,
                 claim_id: str | None, extra_env: dict) -> dict:
        """Make the agent's worktree, write its prompt and submit its job, with `repo` (this thread's own):
        the slow part of starting an agent, done beside the loop. `prompt(repo, wt)` gives the prompt's text."""
        wt, made = self._workspace(repo, slug, base, spare)
        if extra_env:  # the env file names the agent's task, claim and fence too, for whatever sources it
            worktrees.write_env(repo, wt["slug"], {"AGENTKIT_RUN_ID": self.run_id, **extra_env})
        path = prompts.write(wt["path"], prompt(repo, wt))
        values = {**values, "prompt_file": str(path), "worktree": wt["path"]}
        argv = self.preset.command(kind, values)
        timeout = self.opts.init_timeout if kind == "init" else self.opts.timeout
        env = [f"{k}={v}" for k, v in {"AGENTKIT_RUN_ID": self.run_id, "AGENTKIT_AGENT_KIND": kind,
                                        "AGENTKIT_PROMPT_FILE": path, **extra_env}.items()]
        job = jobs.spawn(repo, argv, name=row["name"], worktree=wt["slug"], claim_id=claim_id, timeout=timeout,
                         env=env, executor=self.opts.executor,
                         pool=CODING_POOL if kind != "testing" else self.testing_pool, keep_claim=True)
        with repo.store.tx() as conn:
            conn.execute("UPDATE run_agents SET job_id = ?, worktree = ?, branch = ? WHERE agent_id = ?",
                         (job["job_id"], wt["slug"], wt["branch"], row["agent_id"]))
        return {"job": job, "wt": wt, "argv": argv, "made": made}

    def _started(self, row: dict, kind: str, done: dict) -> None:
        """An agent's job is submitted: the loop tracks it from here."""
        job, wt = done["job"], done["wt"]
        row.update(job_id=job["job_id"], worktree=wt["slug"], branch=wt["branch"])
        if done["made"]:
            self._capacity_update()
        self._emit("agent_update", str(job["job_id"]), state="working" if job["state"] == "running" else "queued",
                   kind=kind, task_id=row["task_id"], agent=row["name"], attempt=row["attempt"],
                   worktree=wt["slug"], command=done["argv"])
        if kind == "coding":
            self._emit("feature_update", str(row["task_id"]), status="in_progress", name=row["task_name"],
                       attempt=row["attempt"])
        self.log.info("%s agent %s: task %s attempt %s in %s (job %s)", kind, row["name"], row["task_id"],
                      row["attempt"], wt["slug"], job["job_id"])

    def _not_started(self, row: dict, exc: AgentkitError) -> None:
        self._give_back(row, f"could not start its agent: {exc.message}")
        self._mark_settled(row, "not started", exc.message)

    def _thread_repo(self):
        if getattr(self._local, "repo", None) is None:
            from agentkit.repo import Repo

            self._local.repo = Repo(self.repo.root)
            self._thread_repos.append(self._local.repo)
        return self._local.repo

    def _collect(self) -> int:
        """Agents whose preparation (in a helper thread) ended: tracked, or their claims given back."""
        done = 0
        for row in [a for a in self.agents.values() if a.get("_future") is not None and a["_future"].done()]:
            future = row.pop("_future")
            done += 1
            try:
                self._started(row, row["kind"], future.result())
            except AgentkitError as exc:
                self._not_started(row, exc)
                if exc.code == ExitCode.USAGE or not self.agents:  # nothing else runs: the run cannot go on
                    raise
                self._emit("run.warning", str(self.run_id), message=f"could not start an agent: {exc.message}",
                           hint=exc.hint)
        return done

    def _start_coding(self) -> bool:
        """Claim the best ready task and have a helper thread start an agent on it; False when none is ready."""
        try:
            claim = claims.claim(self.repo, agent=self._claim_name("coding"))
        except AgentkitError as exc:
            if exc.code == ExitCode.NOTHING_READY:
                return False
            raise
        task = claim["task"]
        row = self._new_agent("coding", task["id"], claim, task["attempts"] + 1)
        row["task_name"] = task["name"]
        base = self._base_commit()
        # a retry has its worktree still; a first attempt takes a spare one if there is one
        spare = self.spares.pop() if self.spares and worktrees.find(self.repo, claim["worktree"]) is None else None

        def prompt(repo, wt):
            return prompts.coding(task, self._deps_delivered(repo, task), row["attempt"], task.get("reason"),
                                  self.opts.into)

        values = {"task_id": task["id"], "task_name": task["name"], "claim_id": claim["claim_id"],
                  "model": self.opts.model, "attempt": row["attempt"]}
        extra = {"AGENTKIT_TASK_ID": task["id"], "AGENTKIT_CLAIM_ID": claim["claim_id"],
                 "AGENTKIT_FENCE": claim["fence"]}
        self.agents[row["agent_id"]] = row
        row["_future"] = self.helpers.submit(lambda: self._prepare(self._thread_repo(), row, "coding",
                                                                   claim["worktree"], base, spare, prompt, values,
                                                                   claim["claim_id"], extra))
        return True

    def _deps_delivered(self, repo, task: dict) -> list[dict]:
        out = []
        for dep_id in task.get("depends_on") or tasks.show(repo, task["id"])["depends_on"]:
            try:
                dep = tasks.show(repo, dep_id)
            except AgentkitError:
                continue
            note = repo.store.rows("SELECT note FROM run_agents WHERE task_id = ? AND kind = 'coding' AND "
                                   "outcome = 'pass' ORDER BY agent_id DESC LIMIT 1", (dep_id,))
            commit = json.loads(note[0]["note"] or "{}").get("commit") if note else None
            files = integration.files_of(repo, commit) if commit and self.opts.into else []
            out.append({"id": dep_id, "name": dep["name"], "status": dep["status"], "files": files})
        return out

    def _start_testing(self) -> bool:
        try:
            picked = claims.claim_regression(self.repo, agent=self._claim_name("testing"), count=1)
        except AgentkitError as exc:
            if exc.code == ExitCode.NOTHING_READY:
                return False
            raise
        claim = picked["claims"][0]
        row = self._new_agent("testing", claim["task_id"], claim, None)
        slug = self.free_testing.pop() if self.free_testing else f"run-testing-{row['agent_id']}"
        values = {"task_id": claim["task_id"], "task_name": claim["task"]["name"], "claim_id": claim["claim_id"],
                  "model": self.opts.model, "attempt": 1}
        try:
            done = self._prepare(self.repo, row, "testing", slug, self._base_commit(), None,
                                 lambda repo, wt: prompts.testing([c["task"] for c in picked["claims"]]), values,
                                 claim["claim_id"], {"AGENTKIT_TASK_ID": claim["task_id"],
                                                     "AGENTKIT_CLAIM_ID": claim["claim_id"]})
        except AgentkitError as exc:
            self._not_started(row, exc)
            raise
        self.agents[row["agent_id"]] = row
        self._started(row, "testing", done)
        self.testing_credits -= 1
        return True

    def _start_init(self) -> None:
        self.init_ran = True
        row = self._new_agent("init", None, None, 1)
        spec = Path(self.opts.spec).read_text() if self.opts.spec else None
        values = {"task_id": "", "task_name": "", "claim_id": "", "model": self.opts.model, "attempt": 1}
        done = self._prepare(self.repo, row, "init", "agentkit-init", self._base_commit(), None,
                             lambda repo, wt: prompts.init(spec), values, None, {})
        self.agents[row["agent_id"]] = row
        self._started(row, "init", done)

    # ---- settling ended agents ------------------------------------------------------------------------------

    def _give_back(self, row: dict, reason: str) -> None:
        """Its claim released with no verdict: the task goes back to the pool, no attempt burned."""
        if row.get("claim_id") and claims.is_active(self.repo, row["claim_id"]):
            try:
                claims.release(self.repo, row["claim_id"], outcome=None, reason=reason)
            except AgentkitError:
                pass  # ended meanwhile: its fence keeps the task safe

    def _mark_settled(self, row: dict, outcome: str, note: str | dict | None = None, usage_: dict | None = None):
        usage_ = usage_ or {}
        with self.repo.store.tx() as conn:
            conn.execute("UPDATE run_agents SET settled_at = ?, outcome = ?, note = ?, input_tokens = ?, "
                         "output_tokens = ?, cost_usd = ? WHERE agent_id = ?",
                         (time.time(), outcome, json.dumps(note) if isinstance(note, dict) else note,
                          usage_.get("input_tokens"), usage_.get("output_tokens"), usage_.get("cost_usd"),
                          row["agent_id"]))
        self.agents.pop(row["agent_id"], None)
        self.log_offsets.pop(row.get("job_id"), None)

    def _read_log(self, job: dict) -> tuple[str, str]:
        try:
            with open(job["log_path"], "rb") as fh:
                text = fh.read(4 << 20).decode(errors="replace")
        except OSError:
            text = ""
        return text[-LOG_TAIL:], text

    def _verdict(self, row: dict, job: dict) -> tuple[dict | None, dict]:
        tail, text = self._read_log(job)
        preset = self.preset
        try:
            verdict = preset.classify(jobs.exit_status(job), tail)
        except Exception as exc:  # noqa: BLE001 - a preset's bug must not stop the run
            self.log.info("classify failed for job %s: %r", job["job_id"], exc)
            verdict = None
        try:
            spent = preset.usage(text) or {}
        except Exception as exc:  # noqa: BLE001
            self.log.info("usage failed for job %s: %r", job["job_id"], exc)
            spent = {}
        return verdict, spent

    def _claim_row(self, claim_id: str | None) -> dict | None:
        return claims.get(self.repo, claim_id) if claim_id else None

    def _settle_paused(self, row: dict, job: dict, verdict: dict) -> str:
        if verdict["kind"] == "login":
            self._give_back(row, "the agent is not logged in")
            if self.login is None:
                self.login = {"message": verdict.get("message", "not logged in"),
                              "hint": getattr(self.preset, "login_hint", "") or "log the agent in, then rerun"}
                self._notify("login_required", f"{self.opts.agent}: {self.login['message']}; {self.login['hint']}",
                             job_id=job["job_id"])
            return "login"
        wait = durations.parse(self.repo.config["run.rate_limit_wait"], "run.rate_limit_wait")
        until = verdict.get("until") or time.time() + wait
        self._give_back(row, f"rate limited until {time.strftime('%H:%M:%S', time.localtime(until))}")
        self.paused_until[row["preset"]] = max(self.paused_until.get(row["preset"], 0), until)
        self._notify("rate_limited", f"{row['preset']} agents are rate limited until "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))}: no new claims before",
                     until=until, task_id=row["task_id"], job_id=job["job_id"])
        return "rate_limited"

    def _settle(self, row: dict, job: dict) -> None:
        verdict, spent = self._verdict(row, job)
        interrupted = self.stop_requested and job["state"] == "killed"
        note = None
        if interrupted:
            self._give_back(row, "interrupted: the run was stopped")
            outcome = "interrupted"
        elif verdict and verdict.get("kind") in ("login", "rate_limited"):
            outcome = self._settle_paused(row, job, verdict)
        elif row["kind"] == "coding":
            outcome, note = self._settle_coding(row, job)
        elif row["kind"] == "testing":
            outcome = self._settle_testing(row, job)
        else:
            outcome, note = self._settle_init(row, job)
        self._mark_settled(row, outcome, note, spent)
        self.log.info("settled %s (job %s, %s, task %s): job %s exit %s -> %s", row["name"], job["job_id"],
                      row["kind"], row["task_id"], job["state"], jobs.exit_status(job), outcome)
        self._emit("agent_update", str(job["job_id"]), state="success" if outcome == "pass" else "error"
                   if outcome in ("fail", "conflict") else outcome, kind=row["kind"], task_id=row["task_id"],
                   agent=row["name"], exit_status=jobs.exit_status(job), outcome=outcome, usage=spent)
        if row["kind"] == "testing" and row.get("worktree") and not interrupted:
            self.free_testing.append(row["worktree"])

    def _settle_coding(self, row: dict, job: dict) -> tuple[str, dict | None]:
        """Its verdict (the agent's own report, else its exit), merged first when it passed, so no dependent
        becomes ready before its dependency's code is in the integration branch."""
        repo = self.repo
        claim = self._claim_row(row["claim_id"])
        if claim is None or claim["state"] == "expired":
            return "expired", None  # its lease ran out: the task went back to the pool already
        if claim["state"] == "active":
            passed = job["state"] == "succeeded"
            reason = None if passed else f"job {job['job_id']} {job['state']}: {job['reason'] or job['exit_code']}"
        else:  # the agent reported its outcome itself (`agentkit task pass|fail`)
            passed, reason = claim["outcome"] == "pass", None
        merged = None
        if passed and self.opts.into and row.get("branch"):
            merged = integration.merge(repo, self.opts.into, row["branch"],
                                       f"agentkit: integrate task {row['task_id']} ({row['branch']})", self.git_env)
            if merged.get("conflicts") is not None:
                files = ", ".join(merged["conflicts"][:10])
                passed, reason = False, f"merge conflict with {self.opts.into} in {files}; its branch " \
                                        f"{row['branch']} is kept, the next attempt starts on the new head"
            elif merged["merged"]:
                self.integrated.append({"task_id": row["task_id"], "commit": merged["commit"]})
                self.log.info("merged %s into %s: %s", row["branch"], self.opts.into, merged["commit"])
        note = {"commit": (merged or {}).get("commit") if (merged or {}).get("merged") else None}
        if claim["state"] == "active":
            result = claims.release(repo, row["claim_id"], outcome="pass" if passed else "fail", reason=reason)
            task = result["task"]
        else:
            if not passed and reason:  # it said pass, but its work does not merge
                claims.settle(repo, row["task_id"], "fail", reason)
            task = tasks.show(repo, row["task_id"])
        if passed and row.get("worktree"):
            self.spares.append(row["worktree"])  # recycled for a next task, or removed when the run ends
        if passed and self.testing_on:
            self.testing_credits += self.opts.testing_ratio
        self._emit("feature_update", str(row["task_id"]), status=task["status"], name=task["name"],
                   attempts=task["attempts"], reason=task.get("reason"))
        if task["status"] == "dead":
            self._notify("task_dead", f"task {task['id']} ({task['name']}) is dead after {task['attempts']} "
                         f"attempts: {task.get('reason')}", task_id=task["id"], blocked=task.get("blocked", []))
        if not passed:
            return ("conflict" if merged and merged.get("conflicts") is not None else "fail"), note
        return "pass", note

    def _trim_spares(self) -> bool:
        """With nothing else to do, remove one spare worktree more than the open tasks can still use, so the
        run's end has little left to tear down. True if it removed one."""
        if not self.spares:
            return False
        counts = tasks.status(self.repo)["counts"]
        if len(self.spares) <= counts.get("pending", 0) + counts.get("failing", 0):
            return False
        self._release_worktree(self.spares.pop(0), None)
        return True

    def _release_worktree(self, slug: str, job: dict | None) -> None:
        try:
            worktrees.remove(self.repo, slug, released_by=f"job {job['job_id']}" if job else None)
            self._capacity_update()
        except AgentkitError as exc:  # uncommitted changes: kept for a person to look at
            self.log.info("kept worktree %s: %s", slug, exc.message)

    def _settle_testing(self, row: dict, job: dict) -> str:
        claim = self._claim_row(row["claim_id"])
        if claim is None or claim["state"] != "active":
            return "expired"
        if job["state"] in ("timed_out", "killed"):
            self._give_back(row, f"testing agent {job['state']}")
            return job["state"]
        passed = job["state"] == "succeeded"
        claims.release(self.repo, row["claim_id"], outcome="pass" if passed else "fail",
                       reason=None if passed else f"regression found by {row['name']} (job {job['job_id']})")
        if not passed:
            task = tasks.show(self.repo, row["task_id"])
            self._emit("feature_update", str(row["task_id"]), status=task["status"], name=task["name"],
                       reason=task.get("reason"))
        return "pass" if passed else "fail"

    def _settle_init(self, row: dict, job: dict) -> tuple[str, dict | None]:
        note = None
        if self.opts.into and row.get("branch"):
            merged = integration.merge(self.repo, self.opts.into, row["branch"], "agentkit: integrate the plan",
                                       self.git_env)
            note = {"commit": merged["commit"] if merged["merged"] else None}
        if row.get("worktree"):
            self._release_worktree(row["worktree"], job)
        return ("pass" if job["state"] == "succeeded" else "fail"), note

    def _settle_ended(self) -> int:
        if not self.agents:
            return 0
        states = jobs.get_many(self.repo, [a["job_id"] for a in self.agents.values() if a["job_id"] is not None])
        ended = 0
        for row in list(self.agents.values()):
            if row["job_id"] is None:  # still being started by a helper thread
                continue
            job = states.get(row["job_id"])
            if job is None:  # pruned by hand meanwhile
                self._give_back(row, "its job record is gone")
                self._mark_settled(row, "lost")
                continue
            if job["state"] in jobs.FINISHED:
                self._settle(row, job)
                ended += 1
            elif job["state"] == "running" and row.get("_seen") != "running":
                row["_seen"] = "running"
        return ended

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
        coding_room = 2 * self.opts.concurrency
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
        counts = tasks.status(self.repo)["counts"]
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
        if tasks.status(self.repo)["total"] == 0 and not self.agents and (self.opts.init_cmd or self.opts.spec):
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
                                  tasks.status(self.repo)["ready"], len(self.agents))
            if not self.agents:
                if self._paused() and not self.login and tasks.status(self.repo)["ready"]:
                    self._wait(min(self.paused_until[self.opts.agent] - time.time(), 60))
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
            if exc.code == ExitCode.USAGE or not self.agents:
                raise
            self._emit("run.warning", str(self.run_id), message=f"could not start an agent: {exc.message}",
                       hint=exc.hint)
            self.log.info("could not start an agent: %s", exc.message)
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
        for row in list(self.agents.values()):  # anything that did not end: its claim goes back all the same
            self._give_back(row, "interrupted: the run was stopped")
            self._mark_settled(row, "interrupted")

    # ---- the end ----------------------------------------------------------------------------------------------

    def _usage_total(self) -> dict:
        row = self.repo.store.rows("SELECT sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
                                   "sum(cost_usd) AS cost_usd, count(*) AS agents FROM run_agents WHERE run_id = ?",
                                   (self.run_id,))[0]
        return {k: v for k, v in row.items() if v is not None}

    def _finish(self) -> dict:
        status = claims.task_status(self.repo)
        counts = status["counts"]
        dead = [t for t in tasks.list_tasks(self.repo, "dead")]
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
                   "usage": self._usage_total(), "wall_s": round(time.time() - self.started, 3),
                   "debug_log": str(self.log_path), "warnings": self.opts.warnings}
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


def worktrees_base(repo) -> str:
    from agentkit import git

    head = git.rev("HEAD", repo.root)
    if head is None:
        raise usage("this repository has no commits yet: HEAD names no commit",
                    "make a first commit (git commit --allow-empty -m 'first commit')")
    return head


def stuck_lines(repo) -> list[str]:
    """Each stuck task and what blocks it: `task 7 waits on 3 (dead after 3 attempts)`."""
    conn = repo.store.conn
    status = {t["id"]: t for t in tasks.list_tasks(repo)}
    lines = []
    for item in tasks.diagnose(conn, claims.holders(conn)):
        why = []
        for d in item["dead"]:
            why.append(f"waits on {d} (dead after {status[d]['attempts']} attempts)")
        for d in item["missing"]:
            why.append(f"waits on {d} (missing)")
        for u in item["unmet"]:
            why.append(f"waits on {u['id']} ({u['status']})")
        if item.get("claimed_by"):
            why.append(f"is claimed by {item['claimed_by']['agent']}")
        if item["status"] == "dead":
            why.insert(0, f"is dead after {status[item['id']]['attempts']} attempts")
        lines.append(f"task {item['id']} ({item['name']}) " + ("; ".join(why) or f"is {item['status']}"))
    return lines


def run(repo, opts: Options, on_event=None, runner: list | None = None) -> dict:
    """Run the graph to its end. `runner`, if given, gets the Run first (so a signal handler can stop it)."""
    r = Run(repo, opts, on_event)
    if runner is not None:
        runner.append(r)
    return r.execute()


def usage_of_task(repo, task_id: int) -> dict:
    row = repo.store.rows("SELECT sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
                          "sum(cost_usd) AS cost_usd, count(*) AS agents FROM run_agents WHERE task_id = ? AND "
                          "kind = 'coding'", (task_id,))[0]
    return {k: v for k, v in row.items() if v is not None}
