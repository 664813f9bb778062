"""`agentkit reap`: one idempotent pass that makes claims and jobs true again after crashes."""

from agentkit import claims, jobs


def recover(repo) -> dict:
    """Expired claims back to the pool; lost runners, unenforced timeouts, leftover auto worktrees and
    queued jobs with free slots handled. Safe to run concurrently, from cron or a git hook."""
    out = {"schema_version": 1, **claims.recover_expired(repo)}
    out.update({k: v for k, v in jobs.recover_lost(repo).items() if k != "schema_version"})
    return out
