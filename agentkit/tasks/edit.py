"""Adding tasks and dependencies, never a cycle; the derived columns follow in the same transaction."""

from agentkit import events
from agentkit.errors import not_found, usage
from agentkit.tasks import dag, outcomes, table


def add(repo, name: str, priority: int = 1000, deps: list[int] = (), description: str = "", category: str = "",
        steps: list[str] = (), meta: dict | None = None) -> dict:
    if not name.strip():
        raise usage("a task needs a name")
    with repo.store.tx() as conn:
        for dep in deps:
            table.get(conn, dep)
        task_id = table.insert(conn, name, priority, description, category, list(steps), meta or {})
        if task_id in deps:
            raise usage(f"task {task_id} cannot depend on itself")
        table.add_edges(conn, [(task_id, dep) for dep in dict.fromkeys(deps)])
        table.count_new_dependent(conn, task_id)
        events.record(conn, "task.added", str(task_id), name=name, deps=list(deps))
        return table.show_in(conn, task_id)


def dep_add(repo, task_id: int, dep_id: int) -> dict:
    with repo.store.tx() as conn:
        table.get(conn, task_id)
        dep = table.get(conn, dep_id)
        deps = table.deps_map(conn)
        dag.check_edge(deps, task_id, dep_id)
        if table.add_edges(conn, [(task_id, dep_id)]):
            deps.setdefault(task_id, set()).add(dep_id)
            table.refresh_dependents(conn, deps)
        if dep["status"] == "dead":
            outcomes.block_dependents(conn, dep_id, dep["name"])
        events.record(conn, "task.dep_added", str(task_id), dep=dep_id)
        return table.show_in(conn, task_id)


def dep_rm(repo, task_id: int, dep_id: int) -> dict:
    with repo.store.tx() as conn:
        table.get(conn, task_id)
        if not table.remove_edge(conn, task_id, dep_id):
            raise not_found(f"task {task_id} does not depend on {dep_id}")
        table.refresh_dependents(conn)
        outcomes.unblock(conn)
        events.record(conn, "task.dep_removed", str(task_id), dep=dep_id)
        return table.show_in(conn, task_id)
