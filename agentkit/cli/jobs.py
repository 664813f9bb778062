"""`agentkit spawn`, `jobs …`, `health`, `reap`: supervised agent jobs."""

import sys
import time
from pathlib import Path

import typer

from agentkit.cli.common import JSON_OPT, handled, open_repo, pairs, render, say, table

app = typer.Typer(help="Supervised agent jobs: list, show, logs, wait, kill, prune.", no_args_is_help=True)
COLUMNS = ["job_id", "name", "state", "exit_status", "worktree", "started", "reason"]


def _rows(jobs: list[dict]) -> list[dict]:
    return [{**j, "started": time.strftime("%H:%M:%S", time.localtime(j["started_at"])) if j["started_at"] else ""}
            for j in jobs]


def _show(job: dict) -> None:
    pairs({**job, "command": " ".join(job["command"])},
          ["job_id", "name", "state", "exit_status", "exit_code", "signal", "reason", "command", "cwd", "worktree",
           "claim_id", "executor", "timeout_s", "wait_s", "run_s", "log_path"])


def spawn(command: list[str] = typer.Argument(None, help="The command, after --."),
          worktree: str = typer.Option(None, "--worktree", help="Run in this worktree (loading its env file), or "
                                       "`auto` for a fresh one released when the job ends."),
          cwd: Path = typer.Option(None, "--cwd", help="Run in this directory (default: here)."),
          claim: str = typer.Option(None, "--claim", help="A claim the job works on: heartbeated while it runs, "
                                    "released pass/fail by its exit."),
          timeout: str = typer.Option(None, "--timeout", help="Execution time limit, e.g. 30m (queue wait is "
                                      "not counted; default jobs.timeout, none)."),
          name: str = typer.Option(None, "--name", help="A label (default: the program's name)."),
          env: list[str] = typer.Option([], "--env", help="NAME=value for the job (repeatable)."),
          executor: str = typer.Option(None, "--executor", help="Executor plugin (default jobs.executor, local)."),
          wait: bool = typer.Option(False, "--wait", help="Block until the job ends and exit with its status."),
          as_json: bool = JSON_OPT):
    """Register a job and return at once (queued or running); --wait blocks and exits with its status."""
    from agentkit import jobs

    with handled(as_json):
        repo = open_repo()
        data = jobs.spawn(repo, command or [], name=name, cwd=str(cwd) if cwd else None, worktree=worktree,
                          claim_id=claim, timeout=timeout, env=env, executor=executor)
        say(f"job {data['job_id']} {data['state']}")
        if wait:
            data = jobs.view(jobs.get(repo, jobs.wait(repo, [data["job_id"]])["jobs"][0]["job_id"]))
    render(data, as_json, _show)
    if wait:
        raise typer.Exit(data["exit_status"])


@app.command("list")
def list_cmd(state: str = typer.Option(None, "--state", help="Only jobs in this state."), as_json: bool = JSON_OPT):
    """Every job the registry remembers (finished ones until jobs.ttl)."""
    from agentkit import jobs

    with handled(as_json):
        rows = jobs.list_jobs(open_repo(), state)
    render({"schema_version": jobs.SCHEMA_VERSION, "jobs": rows}, as_json, lambda d: table(_rows(d["jobs"]), COLUMNS))


@app.command("show")
def show(job_id: int, as_json: bool = JSON_OPT):
    """One job: state, exit status, reason, timings, where its log is."""
    from agentkit import jobs

    with handled(as_json):
        data = jobs.view(jobs.get(open_repo(), job_id))
    render(data, as_json, _show)


@app.command("logs")
def logs(job_id: int, follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until it ends.")):
    """Print a job's output (stdout and stderr, interleaved)."""
    from agentkit import jobs

    with handled(False):
        repo = open_repo()
        job = jobs.get(repo, job_id)
        path = Path(job["log_path"])
        offset = 0
        while True:
            finished = jobs.get(repo, job_id)["state"] in jobs.FINISHED  # read before the log: no lost tail
            chunk = b""
            if path.exists():
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if not follow or (finished and not chunk):
                break
            time.sleep(0.1)


@app.command("wait")
def wait(job_ids: list[int], any_: bool = typer.Option(False, "--any", help="Return when the first one ends."),
         as_json: bool = JSON_OPT):
    """Block until the jobs end; exit with the job's status (124 timed out, 128+N killed by signal N)."""
    from agentkit import jobs

    with handled(as_json):
        data = jobs.wait(open_repo(), job_ids, any_)
    render(data, as_json, lambda d: table(_rows(d["jobs"]), COLUMNS))
    raise typer.Exit(data["exit_status"])


@app.command("kill")
def kill(job_ids: list[int], grace: str = typer.Option(None, "--grace", help="Seconds between TERM and KILL "
                                                       "(default jobs.grace, 10s)."), as_json: bool = JSON_OPT):
    """Stop jobs and their whole process trees (queued ones never start)."""
    from agentkit import jobs

    with handled(as_json):
        data = jobs.kill(open_repo(), job_ids, grace)
    render(data, as_json, lambda d: table(_rows(d["jobs"]), COLUMNS))


@app.command("prune")
def prune(older_than: str = typer.Option(None, "--older-than", help="Age, e.g. 7d (default jobs.ttl)."),
          as_json: bool = JSON_OPT):
    """Forget finished jobs older than the TTL, with their logs."""
    from agentkit import jobs

    with handled(as_json):
        data = jobs.prune(open_repo(), older_than)
    say(f"pruned {len(data['pruned'])} job(s)")
    _say_env_files(data)
    render(data, as_json, lambda d: None)


def _say_env_files(data: dict) -> None:
    if data["env_files_removed"]:
        say(f"deleted {data['env_files_removed']} saved job environment(s) no job needs")


def health(as_json: bool = JSON_OPT):
    """busy, active, queued, capacity, max_queue_depth and the oldest queued job's wait."""
    from agentkit import jobs

    with handled(as_json):
        data = jobs.health(open_repo())
    def shown(d: dict) -> None:
        pairs({k: v for k, v in d.items() if k != "executors"})
        for name, facts in d["executors"].items():
            say(f"executor {name}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))

    render(data, as_json, shown)


def reap(as_json: bool = JSON_OPT):
    """Recover after crashes: expired claims, dead supervisors and their orphans, timeouts, auto worktrees.
    Idempotent and safe to run concurrently (cron, git hooks)."""
    from agentkit.reaper import recover as run

    with handled(as_json):
        data = run(open_repo())
    for item in data["expired_claims"]:
        say(f"expired claim {item['claim_id']} of {item['agent']} on task {item['task_id']}")
    for job_id in data["dead_supervisors"]:
        say(f"job {job_id}: its runner died or never started; recorded as failed")
    for job_id in data["timed_out"]:
        say(f"job {job_id}: past its timeout; killed")
    if data["orphans_killed"]:
        say(f"{data['orphans_killed']} orphaned process(es) of dead runners killed")
    _say_env_files(data)
    render(data, as_json, lambda d: None)
