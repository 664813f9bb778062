"""The prompt file an agent of `agentkit run` gets: what to do, what it builds on, how to report."""

import json
from pathlib import Path

FILE = ".agent-prompt.md"


def _steps(task: dict) -> list[str]:
    steps = task.get("steps") or []
    if isinstance(steps, str):
        try:
            steps = json.loads(steps)
        except ValueError:
            steps = [steps]
    return [str(s) for s in steps]


def _task_block(task: dict, heading: str) -> list[str]:
    lines = [f"{heading} Task {task['id']}: {task['name']}", ""]
    if task.get("description"):
        lines += [task["description"], ""]
    steps = _steps(task)
    if steps:
        lines += ["Steps:"] + [f"{i}. {s}" for i, s in enumerate(steps, 1)] + [""]
    return lines


def coding(task: dict, deps: list[dict], attempt: int, last_reason: str | None, into: str | None) -> str:
    """`deps`: the task's dependencies, each with what its integration brought in (``files``), if known."""
    lines = _task_block(task, "#")
    if attempt > 1:
        lines += [f"This is attempt {attempt}." + (f" The last one ended: {last_reason}" if last_reason else ""), ""]
    if deps:
        lines += ["## What this builds on", ""]
        for d in deps:
            files = d.get("files") or []
            lines.append(f"- task {d['id']} ({d['name']}), {d['status']}"
                         + (f": changed {', '.join(files[:12])}" + (" …" if len(files) > 12 else "") if files else ""))
        where = f"the integration branch {into}" if into else "this worktree's base"
        lines += ["", f"Their code is in this worktree already ({where}).", ""]
    lines += ["## When you are done", "",
              "Commit your work on this branch (the run merges it for the tasks that depend on this one).",
              "Exit 0 when the task is done and its checks pass, non-zero otherwise; or report it yourself:",
              "`agentkit task pass` or `agentkit task fail --reason '…'` (this environment names the task and",
              "its fence, so a report from an agent that lost the task is refused).", ""]
    return "\n".join(lines)


def testing(picks: list[dict]) -> str:
    lines = ["# Regression check", "",
             "These tasks passed before. Check that each still works in this worktree (the integrated code):", ""]
    for task in picks:
        lines += _task_block(task, "##")
    lines += ["## When you are done", "", "Do not commit. Exit 0 when every task above still works, non-zero when",
              "one does not, and say which in your output.", ""]
    return "\n".join(lines)


def init(spec: str | None) -> str:
    lines = ["# Plan the work", "",
             "Break the project below into tasks for coding agents and create them with agentkit:",
             "`agentkit task import FILE` (JSON or YAML: a list of {name, description, steps, priority, deps})",
             "or `agentkit task add NAME --description … --dep ID`. Each task should be small, testable, and",
             "name the tasks it needs (deps) so they run in order. Exit 0 when the tasks are created.", ""]
    if spec:
        lines += ["## The project", "", spec, ""]
    return "\n".join(lines)


def write(folder: str | Path, text: str) -> Path:
    path = Path(folder) / FILE
    path.write_text(text)
    return path
