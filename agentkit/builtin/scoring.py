"""The default task score: (1000 - priority) + 100 × dependents - 10 × skips."""

from agentkit.hookspecs import hookimpl


@hookimpl
def task_scores(tasks: list) -> list:
    out = []
    for t in tasks:
        parts = {"priority": 1000 - t["priority"], "dependents": 100 * t["dependents"], "skips": -10 * t["skip_count"]}
        out.append({"score": sum(parts.values()), "parts": parts})
    return out
