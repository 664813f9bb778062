"""A worktree that queued or running jobs work in is in use: `worktree remove` refuses it without --force."""

from agentkit import jobs
from agentkit.hookspecs import hookimpl


@hookimpl
def worktree_users(repo, worktree: dict, released_by: str | None) -> list[str]:
    busy = [job_id for job_id in jobs.active_in(repo, worktree["slug"]) if f"job {job_id}" != released_by]
    return [f"job(s) {busy}"] if busy else []
