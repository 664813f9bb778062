"""`agentkit reap`: one idempotent pass that makes claims and jobs true again after crashes."""

from agentkit import claims, jobs


def reap(repo) -> dict:
    """Expired claims back to the pool; dead supervisors, unenforced timeouts, leftover auto worktrees and
    queued jobs with free slots handled. Safe to run concurrently, from cron or a git hook."""
    return {"schema_version": 1, **claims.reap(repo), **{k: v for k, v in jobs.reap(repo).items()
                                                          if k != "schema_version"}}
