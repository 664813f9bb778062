"""Documents only the page needs, composed from core's public functions: the running agents, a log's tail."""

from pathlib import Path

from agentkit import events, jobs

LAST_LINE_BYTES = 4096


def last_line(path: Path) -> str:
    lines = [line for line in jobs.log_tail(path, LAST_LINE_BYTES).splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _agent_updates(repo) -> dict[str, dict]:
    """The newest agent_update of each job (by subject, the job id): which task, kind, attempt and worktree."""
    newest: dict[str, dict] = {}
    since = 0
    while batch := events.recent(repo.store, kind="agent_update", since_id=since, limit=500):
        for e in batch:
            newest[e["subject"]] = {**newest.get(e["subject"], {}), **e["data"], "event_id": e["id"]}
        since = batch[-1]["id"]
    return newest


def agents(repo) -> dict:
    """One row per running job; an agent of `agentkit run` adds what its agent_update events said."""
    updates = _agent_updates(repo)
    rows = []
    for job in jobs.list_jobs(repo, "running"):
        said = updates.get(str(job["job_id"]), {})
        rows.append({"job_id": job["job_id"], "name": job["name"], "state": job["state"],
                     "agent_state": said.get("state"), "kind": said.get("kind") or "job",
                     "agent": said.get("agent") or job["name"], "task_id": said.get("task_id"),
                     "attempt": said.get("attempt"), "worktree": said.get("worktree") or job["worktree"],
                     "claim_id": job["claim_id"], "started_at": job["started_at"], "run_s": job["run_s"],
                     "last_line": last_line(Path(job["log_path"])) if job["log_path"] else ""})
    return {"schema_version": 1, "agents": rows}
