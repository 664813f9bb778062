"""Starting agents: a claim, a worktree at the base (made, recycled or started over), the prompt, the job;
coding agents are started by helper threads, each with its own Repo."""

import json
import time
from pathlib import Path

from agentkit import claims, git, integration, jobs, prompts, tasks, worktrees
from agentkit.errors import AgentkitError, ExitCode
from agentkit.orchestrator.options import CODING_POOL


class Starting:
    """The part of `Run` that starts agents."""

    def _active(self, kind: str) -> int:
        return sum(1 for a in self.agents.values() if a["kind"] == kind)

    def _new_agent(self, kind: str, task_id: int | None, claim: dict | None, attempt: int | None) -> dict:
        """The agent's row; its name is its claim's agent (`run3/coding-17`), which its job is named after too."""
        name = claim["agent"] if claim else self._claim_name(kind)
        with self.repo.store.tx() as conn:
            cur = conn.execute("INSERT INTO run_agents (run_id, name, kind, preset, task_id, claim_id, fence, attempt, "
                               "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (self.run_id, name, kind, self.opts.agent, task_id, claim and claim["claim_id"],
                                claim and claim["fence"], attempt, time.time()))
            return dict(conn.execute("SELECT * FROM run_agents WHERE agent_id = ?", (cur.lastrowid,)).fetchone())

    def _claim_name(self, kind: str) -> str:
        self.named += 1  # one name per agent of this run: a claim by the same agent name would be the same claim
        return f"run{self.run_id}/{kind}-{self.named}"

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
        row["announced"] = "working" if job["state"] == "running" else "queued"  # `working` follows when it starts
        self._emit("agent_update", str(job["job_id"]), state=row["announced"], kind=kind, task_id=row["task_id"],
                   agent=row["name"], attempt=row["attempt"], worktree=wt["slug"], command=done["argv"])
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
                self.failed_starts = 0
            except Exception as exc:  # noqa: BLE001 - one agent that cannot start gives its task back, no more
                self.failed_starts += 1  # and the next ones wait a little, rather than fail in a tight loop
                self.starts_after = time.time() + min(2 ** (self.failed_starts - 1), 30)
                if not isinstance(exc, AgentkitError):
                    self.log.info("starting %s failed: %r", row["name"], exc)
                    exc = AgentkitError(f"{type(exc).__name__}: {exc}", "see the run's debug log")
                self._not_started(row, exc)
                self._start_failed(exc)
        return done

    def _start_failed(self, exc: AgentkitError) -> None:
        """An agent could not start (a full band, a full queue, a worktree that cannot be made): reported, and
        the run goes on with the agents it has; with none left, or for bad input, the run ends with the error."""
        if exc.code == ExitCode.USAGE or not self.agents:
            raise exc from None
        self._emit("run.warning", str(self.run_id), message=f"could not start an agent: {exc.message}",
                   hint=exc.hint)
        self.log.info("could not start an agent: %s", exc.message)

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
