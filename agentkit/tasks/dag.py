"""Graph algorithms over depends-on edges (iterative: a 1,000-deep chain is fine); pure, no SQL."""

from collections import deque

from agentkit.errors import AgentkitError, usage

Deps = dict[int, set[int]]  # task -> the tasks it depends on


def reverse(deps: Deps) -> dict[int, list[int]]:
    """task -> the tasks that depend on it directly (the one reverse map every walk below uses)."""
    out: dict[int, list[int]] = {}
    for task_id, ds in deps.items():
        for d in ds:
            out.setdefault(d, []).append(task_id)
    return out


def find_path(deps: Deps, start: int, goal: int) -> list[int] | None:
    """A path start → … → goal following depends-on edges, or None."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            while node is not None:
                path.append(node)
                node = parent[node]
            return path[::-1]
        for nxt in sorted(deps.get(node, ())):
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return None


def cycle_error(path: list[int]) -> AgentkitError:
    return usage(f"dependency cycle refused: {' → '.join(map(str, path))}",
                 "each arrow reads 'depends on'; drop one of these dependencies")


def check_edge(deps: Deps, task_id: int, dep_id: int) -> None:
    """Refuse an edge task → dep that is a self-dependency or closes a cycle (exit 2, with the path)."""
    if task_id == dep_id:
        raise usage(f"task {task_id} cannot depend on itself")
    back = find_path(deps, dep_id, task_id)
    if back is not None:
        raise cycle_error([task_id, *back])


def find_cycle(nodes: list[int], deps: Deps) -> list[int] | None:
    """Any cycle in the graph, as a closed path, or None (Kahn's algorithm, then a walk inside the rest)."""
    indeg = {n: 0 for n in nodes}
    for n in nodes:
        for d in deps.get(n, ()):
            if d in indeg:
                indeg[n] += 1
    dependents = reverse(deps)
    queue = deque(n for n, k in indeg.items() if k == 0)
    while queue:
        n = queue.popleft()
        for m in dependents.get(n, ()):
            if m in indeg:
                indeg[m] -= 1
                if indeg[m] == 0:
                    queue.append(m)
    rest = {n for n, k in indeg.items() if k > 0}
    if not rest:
        return None
    node, seen = min(rest), []
    while node not in seen:  # every node left has a dependency inside the rest: walking must loop
        seen.append(node)
        node = min(d for d in deps[node] if d in rest)
    return seen[seen.index(node):] + [node]


def dependents_counts(ids: list[int], deps: Deps) -> dict[int, int]:
    """Distinct tasks depending on each task, directly or transitively (bitsets, dependents first)."""
    bit = {n: 1 << i for i, n in enumerate(ids)}
    dependents = reverse(deps)
    waiting = {n: len(dependents.get(n, ())) for n in ids}
    below: dict[int, int] = {}
    queue = deque(n for n in ids if waiting[n] == 0)
    while queue:
        n = queue.popleft()
        acc = 0
        for m in dependents.get(n, ()):
            acc |= below.get(m, 0) | bit.get(m, 0)
        below[n] = acc
        for d in deps.get(n, ()):
            if d in waiting:
                waiting[d] -= 1
                if waiting[d] == 0:
                    queue.append(d)
    return {n: below.get(n, 0).bit_count() for n in ids}


def downstream(deps: Deps, task_id: int) -> list[int]:
    """Every task depending on task_id, directly or transitively, nearest first."""
    dependents = reverse(deps)
    seen: dict[int, None] = {}
    queue = deque(dependents.get(task_id, ()))
    while queue:
        n = queue.popleft()
        if n not in seen:
            seen[n] = None
            queue.extend(dependents.get(n, ()))
    return list(seen)


def reaches(deps: Deps, start: int, targets: set[int]) -> bool:
    """Does some dependency path from start lead to one of targets?"""
    seen, queue = {start}, deque([start])
    while queue:
        for d in deps.get(queue.popleft(), ()):
            if d in targets:
                return True
            if d not in seen:
                seen.add(d)
                queue.append(d)
    return False
