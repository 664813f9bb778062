"""The task graph: tasks and their dependencies (never a cycle), the scored ready set, outcomes, diagnosis.

The package owns the tasks, task_deps and task_scoring tables; other modules use the functions named here.
Claims on tasks are agentkit.claims, which calls `take`, `put_back` and `apply_outcome`."""

from agentkit.errors import usage
from agentkit.tasks.dag import cycle_error, dependents_counts, find_cycle, find_path
from agentkit.tasks.diagnosis import describe_stuck, diagnose, status_in, stuck_lines
from agentkit.tasks.edit import add, dep_add, dep_rm
from agentkit.tasks.importer import import_file
from agentkit.tasks.outcomes import OUTCOMES, apply_outcome, put_back, record_failure, regressed
from agentkit.tasks.ready import ready, scored, take
from agentkit.tasks.table import (
    FAILED_STATUSES,
    READY_STATUSES,
    STATUSES,
    count_ready,
    deps_map,
    get,
    graph_of,
    insert,
    least_recently_verified,
    mark_verified,
    show_in,
)
from agentkit.tasks.table import counts as _counts_in
from agentkit.tasks.table import list_tasks as _list_in

SCHEMA_VERSION = 1

__all__ = ["FAILED_STATUSES", "OUTCOMES", "READY_STATUSES", "SCHEMA_VERSION", "STATUSES", "add", "apply_outcome",
           "counts", "cycle_error", "dep_add", "dep_rm", "dependents_counts", "deps_map", "describe_stuck",
           "diagnose", "find_cycle", "find_path", "get", "graph", "import_file", "insert", "least_recently_verified",
           "list_tasks", "mark_verified", "put_back", "ready", "ready_count", "record_failure", "regressed",
           "scored", "show", "show_in", "status", "status_in", "stuck_lines", "take"]


def list_tasks(repo, status: str | None = None) -> list[dict]:
    if status is not None and status not in STATUSES:
        raise usage(f"unknown status {status!r}", f"choose one of: {', '.join(STATUSES)}")
    return _list_in(repo.store.conn, status)


def show(repo, task_id: int) -> dict:
    return show_in(repo.store.conn, task_id)


def graph(repo) -> dict:
    return {"schema_version": SCHEMA_VERSION, **graph_of(repo.store.conn)}


def counts(repo) -> dict[str, int]:
    """Tasks by status, and nothing more (`status` adds the diagnosis when nothing is ready)."""
    return _counts_in(repo.store.conn)


def ready_count(repo) -> int:
    return count_ready(repo.store.conn)


def status(repo, holders: dict[int, dict] | None = None) -> dict:
    return status_in(repo.store.conn, holders)
