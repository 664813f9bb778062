"""Settling ended agents: the verdict (the agent's own report, its preset's reading, its exit), the merge
before a pass is released, claims given back without a verdict, spare worktrees."""

import json
import time

from agentkit import claims, durations, integration, jobs, tasks, worktrees
from agentkit.errors import AgentkitError
from agentkit.orchestrator.options import LOG_TAIL


class Settling:
    """The part of `Run` that settles ended agents."""

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
        """The end of an agent's log (its last 4 MiB, where a result and a usage report are), and its last
        LOG_TAIL characters for classify."""
        text = jobs.log_tail(job["log_path"], 4 << 20)
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
        interrupted = job["state"] == "killed"  # stopped by a person (Ctrl-C, `jobs kill`): no attempt burned
        note = None
        if interrupted:
            self._give_back(row, "interrupted: the run was stopped")
            outcome = "interrupted"
        elif jobs.unheard(job) and self._unheard_is_no_verdict(row):
            self._give_back(row, f"no exit status reached agentkit: {job['reason']}")
            outcome = "lost"
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

    def _unheard_is_no_verdict(self, row: dict) -> bool:
        """A runner lost to a reboot or the OOM killer (or a command that never started) says nothing of the
        agent's work: its task goes back unburned, unless the agent reported an outcome first, or this happened
        `tasks.max_attempts` times already (then it counts as a failed attempt, so a task whose agent takes the
        machine down ends)."""
        claim = self._claim_row(row["claim_id"])
        if claim is None or claim["state"] != "active" or claim.get("reported"):
            return False
        lost_before = self.repo.store.conn.execute(
            "SELECT count(*) FROM run_agents WHERE task_id = ? AND outcome = 'lost'", (row["task_id"],)).fetchone()[0]
        return lost_before < self.repo.config["tasks.max_attempts"]

    def _settle_coding(self, row: dict, job: dict) -> tuple[str, dict | None]:
        """Its verdict (the agent's own report, else its exit), merged first when it passed, so no dependent
        becomes ready before its dependency's code is in the integration branch."""
        repo = self.repo
        claim = self._claim_row(row["claim_id"])
        if claim is None or claim["state"] == "expired":
            return "expired", None  # its lease ran out: the task went back to the pool already
        if claim["state"] == "active" and claim.get("reported"):  # its own `agentkit task pass|fail` wins
            passed, reason = claim["reported"] == "pass", claim.get("reported_reason")
            if not passed:
                reason = f"the agent reported a failure: {reason}" if reason else "the agent reported a failure"
        elif claim["state"] == "active":
            passed = job["state"] == "succeeded"
            reason = None if passed else f"job {job['job_id']} {job['state']}: {job['reason'] or job['exit_code']}"
        else:  # settled by hand meanwhile (`agentkit task pass|fail|skip` outside the run's agents)
            passed, reason = claim["outcome"] == "pass", None
        merged = None
        if passed and row.get("worktree") and worktrees.find(repo, row["worktree"]):
            left = worktrees.commit_all(repo, row["worktree"], f"agentkit: task {row['task_id']}, left uncommitted "
                                        "by its agent")
            if left:
                self.log.info("committed what %s left uncommitted: %s", row["name"], left)
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
        counts = tasks.counts(self.repo)  # on an idle turn of the loop: no diagnosis wanted
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
            elif job["state"] == "running" and row.get("announced") == "queued":  # a queued agent started
                row["announced"] = "working"
                self._emit("agent_update", str(job["job_id"]), state="working", kind=row["kind"],
                           task_id=row["task_id"], agent=row["name"], attempt=row["attempt"],
                           worktree=row.get("worktree"))
        return ended
