"""One read of everything a dashboard or script wants to know, as a versioned document."""

from agentkit import capacity, claims, jobs, redis, worktrees

SCHEMA_VERSION = 1


def snapshot(repo) -> dict:
    """Read-only and fast: state and git only; Redis is not asked (physical_max is the last value seen)."""
    cap = capacity.status(repo, live=False)
    cap.pop("schema_version", None)
    red = redis.status(repo, live=False)
    out = {"schema_version": SCHEMA_VERSION, "repo": str(repo.root),
           "worktrees": worktrees.list_all(repo),
           "capacity": {k: v for k, v in cap.items() if k != "slots"},
           "redis": {"url": redis.redacted(red["url"]) if red["url"] else None,
                     "managed": red["managed"], "running": red["running"]},
           "tasks": {k: v for k, v in claims.task_status(repo).items() if k != "schema_version"},
           "jobs": {**{k: v for k, v in jobs.health(repo).items() if k != "schema_version"},
                    "active_jobs": jobs.list_jobs(repo, "running") + jobs.list_jobs(repo, "queued")}}
    for section in repo.hook.snapshot_sections(repo=repo):
        out.update(section or {})
    return out
