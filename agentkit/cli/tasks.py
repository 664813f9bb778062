"""`agentkit task …`, `claim`, `heartbeat`, `release`, `reap`: the task graph and claims on it."""

import os
import time
from pathlib import Path

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, pairs, render, say, table
from agentkit.errors import usage

app = typer.Typer(help="The task graph: tasks, dependencies, the ready set and outcomes.", no_args_is_help=True)
dep_app = typer.Typer(help="Add or remove a dependency (TASK depends on DEP).", no_args_is_help=True)
app.add_typer(dep_app, name="dep")

COLUMNS = ["id", "name", "status", "priority", "attempts", "skip_count", "reason"]
REASON = typer.Option(None, "--reason", help="Why: recorded on the task and in the event log.")


def _when(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else ""


def _show(task: dict) -> None:
    from agentkit.tasks.diagnosis import describe_waits

    pairs({**task, "waits_on": describe_waits(task.get("waits_on", []))},
          ["id", "name", "status", "reason", "priority", "attempts", "skip_count", "category", "depends_on",
           "waits_on", "required_by"])
    if task.get("claim"):
        c = task["claim"]
        print(f"{'claim':<11}  {c['agent']} (fence {c['fence']}) until {_when(c['lease_expires_at'])}")
    spent = task.get("usage") or {}
    if spent.get("agents"):
        print(f"{'usage':<11}  {spent['agents']} agent run(s), {spent.get('input_tokens', 0)} tokens in, "
              f"{spent.get('output_tokens', 0)} out, ${spent.get('cost_usd', 0):.4f}")


@app.command("add")
def add(name: str, priority: int = typer.Option(1000, help="Lower goes sooner; any integer."),
        dep: list[int] = typer.Option([], "--dep", help="A task id this one depends on (repeatable)."),
        description: str = typer.Option("", help="What to do."),
        category: str = typer.Option("", help="Free-form grouping."),
        step: list[str] = typer.Option([], "--step", help="A step (repeatable, kept in order)."),
        as_json: bool = JSON_OPT):
    """Add a task."""
    from agentkit import tasks

    with handled(as_json):
        data = tasks.add(open_repo(), name, priority, dep, description, category, step)
    say(f"added task {data['id']}")
    render(data, as_json, _show)


@app.command("import")
def import_cmd(file: Path, as_json: bool = JSON_OPT):
    """Add every task in a JSON or YAML file, or an autocoder features.db (all or nothing; every problem is
    listed)."""
    from agentkit import tasks

    with handled(as_json):
        data = tasks.import_file(open_repo(), file)
    say(f"imported {data['imported']} tasks")
    if data["renumbered"]:
        moved = ", ".join(f"feature {a} → task {b}" for a, b in data["renumbered"].items())
        say(f"ids already taken here, so new ones: {moved}")
    render(data, as_json, lambda d: print(" ".join(map(str, d["ids"]))))


@app.command("list")
def list_cmd(status: str = typer.Option(None, "--status", help="Only tasks with this status."),
             as_json: bool = JSON_OPT):
    """Every task (or those with one status)."""
    from agentkit import tasks

    with handled(as_json):
        rows = tasks.list_tasks(open_repo(), status)
    render({"schema_version": tasks.SCHEMA_VERSION, "tasks": rows}, as_json, lambda d: table(d["tasks"], COLUMNS))


@app.command("show")
def show(task_id: int, as_json: bool = JSON_OPT):
    """One task with its dependencies (and which of them it still waits on), dependents and claim."""
    from agentkit import claims, orchestrator

    with handled(as_json):
        repo = open_repo()
        data = {**claims.show_task(repo, task_id), "usage": orchestrator.usage_of_task(repo, task_id)}
    render(data, as_json, _show)


@app.command("ready")
def ready(as_json: bool = JSON_OPT):
    """Tasks whose dependencies all pass, best score first."""
    from agentkit import tasks

    with handled(as_json):
        rows = tasks.ready(open_repo())
    render({"schema_version": tasks.SCHEMA_VERSION, "tasks": rows}, as_json,
           lambda d: table([{**r, "score_parts": " ".join(f"{k}={v}" for k, v in r["score_parts"].items())}
                            for r in d["tasks"]], ["id", "name", "score", "score_parts", "priority"]))


@app.command("graph")
def graph(as_json: bool = JSON_OPT, dot: bool = typer.Option(False, "--dot", help="Graphviz DOT instead.")):
    """The dependency graph (edges read: task depends on dep)."""
    from agentkit import tasks

    with handled(as_json):
        data = tasks.graph(open_repo())
    if dot:
        print("digraph tasks {\n  rankdir=LR;")
        for t in data["tasks"]:
            label = t["name"].replace('"', '\\"')
            print(f'  t{t["id"]} [label="{t["id"]}: {label}\\n{t["status"]}"];')
        for task_id, dep_id in data["edges"]:
            print(f"  t{task_id} -> t{dep_id};")
        print("}")
        return
    def human(d):
        table(d["tasks"], ["id", "name", "status"])
        for task_id, dep_id in d["edges"]:
            print(f"{task_id} → {dep_id}")

    render(data, as_json, human)


@app.command("status")
def status(as_json: bool = JSON_OPT):
    """Counts per status; when nothing is ready while work remains, what each task waits on."""
    from agentkit import claims, tasks

    with handled(as_json):
        data = claims.task_status(open_repo())

    def human(d):
        print("  ".join(f"{k}={v}" for k, v in d["counts"].items()) + f"  ready={d['ready']}")
        if d.get("diagnosis"):
            say("nothing is ready:")
            say("  " + tasks.describe_stuck(d["diagnosis"]))

    render(data, as_json, human)


# Set in an agent's environment (its env file), so the agent can report with a bare `agentkit task pass`.
TASK_ENV, FENCE_ENV = "AGENTKIT_TASK_ID", "AGENTKIT_FENCE"


def _env_int(name: str, what: str, strict: bool = True) -> int | None:
    """A positive 64-bit integer from the environment, None when unset or empty; a malformed one is a usage error
    (or None when not `strict`: it cannot then be the task asked for)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit() and 0 < int(raw) < 2**63:
        return int(raw)
    if not strict:
        return None
    raise usage(f"{name}={raw!r} is not {what}: a positive 64-bit integer",
                f"fix or unset {name} in the agent's environment, or pass the value on the command line")


def _own_task(outcome: str, task_id: int | None, fence: int | None) -> tuple[int, int | None]:
    """The task and fence an outcome is for: as given, else from the agent's environment. The environment's fence
    goes only with the environment's task: an explicit id for another task never borrows it."""
    if task_id is None:
        task_id = _env_int(TASK_ENV, "a task id")
        if task_id is None:
            raise usage(f"`task {outcome}` needs a task id: none given and {TASK_ENV} is not set",
                        f"pass it (`agentkit task {outcome} 7`), or run this from the agent's environment, "
                        f"where {TASK_ENV} names its task")
        env_task = task_id
    else:
        env_task = _env_int(TASK_ENV, "a task id", strict=False)
    if fence is None and env_task == task_id:
        fence = _env_int(FENCE_ENV, "a fence")
    return task_id, fence


def _outcome(outcome: str):
    own = outcome != "reset"  # an agent reports its own pass, fail or skip; a reset is a person's decision
    task_arg = typer.Argument(None if own else ..., show_default=False,
                              help=f"The task (default: {TASK_ENV}, set in an agent's environment)." if own
                              else "The task.")

    def command(task_id: int = task_arg, reason: str = REASON,
                fence: int = typer.Option(None, "--fence", help="Refuse (exit 7) unless this claim fence still "
                                          f"holds the task (default: {FENCE_ENV}, when {TASK_ENV} names this "
                                          "task)."), as_json: bool = JSON_OPT):
        from agentkit import claims

        with handled(as_json):
            task_id, fence = _own_task(outcome, task_id, fence)
            if fence is not None and outcome in ("pass", "fail") and os.environ.get("AGENTKIT_RUN_ID"):
                # an agent of `agentkit run`: the run applies the verdict once it has merged the branch
                data = claims.report(open_repo(), task_id, outcome, reason, fence)
                say(f"reported {outcome} for task {task_id}: agentkit run applies it when the agent ends")
            else:
                data = claims.settle(open_repo(), task_id, outcome, reason, fence)
        if data.get("blocked"):
            say(f"task {task_id} is dead; blocked its dependents {data['blocked']}")
        render(data, as_json, _show)

    command.__doc__ = {"pass": "Mark a task passing.",
                       "fail": "Record a failed attempt (dead at tasks.max_attempts; dependents get blocked).",
                       "skip": "Put a task back with skip_count + 1 (its score drops by 10).",
                       "reset": "Bring a task (dead, blocked, failing …) back to pending with attempts 0."}[outcome]
    return command


for _name in ("pass", "fail", "skip", "reset"):
    app.command(_name)(_outcome(_name))


@dep_app.command("add")
def dep_add(task_id: int, dep_id: int, as_json: bool = JSON_OPT):
    """TASK depends on DEP from now on (refused if it would close a cycle)."""
    from agentkit import tasks

    with handled(as_json):
        data = tasks.dep_add(open_repo(), task_id, dep_id)
    render(data, as_json, _show)


@dep_app.command("rm")
def dep_rm(task_id: int, dep_id: int, as_json: bool = JSON_OPT):
    """TASK no longer depends on DEP."""
    from agentkit import tasks

    with handled(as_json):
        data = tasks.dep_rm(open_repo(), task_id, dep_id)
    render(data, as_json, _show)


def _claim_human(d: dict) -> None:
    pairs(d, ["claim_id", "fence", "task_id", "agent", "kind", "worktree"])
    print(f"{'lease':<9} until {_when(d['lease_expires_at'])}")
    print(f"{'task':<9} {d['task']['name']}")


LEASE = typer.Option(None, "--lease", help="Lease length, e.g. 30m (default claims.lease).")


def claim(task_id: int = typer.Argument(None, help="Claim this task (default: the best ready one)."),
          agent: str = typer.Option(..., "--agent", help="Who holds the claim."), lease: str = LEASE,
          regression: bool = typer.Option(False, "--regression", help="Claim passing tasks to re-verify."),
          count: int = typer.Option(1, "--count", help="With --regression: how many."), as_json: bool = JSON_OPT):
    """Atomically claim a ready task (exit 4 if none, 7 if someone else holds it)."""
    from agentkit import claims

    with handled(as_json):
        repo = open_repo()
        if regression:
            data = claims.claim_regression(repo, agent, count, lease)
        else:
            data = claims.claim(repo, agent, task_id, lease)
    if regression:
        render(data, as_json, lambda d: table([{**c, "name": c["task"]["name"]} for c in d["claims"]],
                                              ["claim_id", "fence", "task_id", "name"]))
    else:
        render(data, as_json, _claim_human)


def heartbeat(claim_id: str,
              lease: str = typer.Option(None, "--lease", help="New lease length, kept for later heartbeats "
                                        "(default: the claim's own lease)."),
              as_json: bool = JSON_OPT):
    """Extend a claim's lease by its own length (exit 7 if it already expired)."""
    from agentkit import claims

    with handled(as_json):
        data = claims.heartbeat(open_repo(), claim_id, lease)
    render(data, as_json, _claim_human)


def release(claim_id: str,
            outcome: str = typer.Option(None, "--outcome", help="pass, fail or skip (default: just let go)."),
            reason: str = REASON, as_json: bool = JSON_OPT):
    """End a claim, optionally with the task's outcome (exit 7 for a stale claim)."""
    from agentkit import claims

    with handled(as_json):
        data = claims.release(open_repo(), claim_id, outcome, reason)
    render(data, as_json, lambda d: pairs({**d, "task_status": d["task"]["status"]},
                                          ["claim_id", "task_id", "state", "outcome", "task_status"]))
