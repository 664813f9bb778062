"""`agentkit run`: parse the flags, run the orchestrator, show its events (live status, lines, or JSON lines)."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import typer

from agentkit.cli.common import handled, open_repo, say


def run(
    concurrency: int = typer.Option(None, "-c", "--concurrency", help="Coding agents at once (config run.concurrency, "
                                    "default 1; clamped to run.max_concurrency)."),
    testing_ratio: int = typer.Option(None, "--testing-ratio", help="Testing agents after each passing coding agent, "
                                      "0-3 (config run.testing_ratio, default 1)."),
    count_testing: bool = typer.Option(False, "--count-testing", help="Testing agents count toward -c."),
    yolo: bool = typer.Option(False, "--yolo", help="No testing agents."),
    agent: str = typer.Option(None, "--agent", help="Agent preset: claude, codex, aider, gemini, shell or a plugin's "
                              "(config run.agent)."),
    agent_cmd: str = typer.Option(None, "--agent-cmd", help="Coding agent template, e.g. 'my-agent {prompt_file}'; "
                                  "placeholders {task_id} {task_name} {prompt_file} {worktree} {claim_id} {model} "
                                  "{attempt}."),
    testing_cmd: str = typer.Option(None, "--testing-cmd", help="Testing agent template."),
    model: str = typer.Option(None, "--model", help="Model name passed to the preset ({model})."),
    max_attempts: int = typer.Option(None, "--max-attempts", help="Attempts before a task is dead "
                                     "(tasks.max_attempts, default 3)."),
    timeout: str = typer.Option(None, "--timeout", help="Per agent, execution only (config run.timeout, 60m)."),
    init_cmd: str = typer.Option(None, "--init-cmd", help="Initializer template: run first when the graph is empty; "
                                 "it creates the tasks."),
    spec: Path = typer.Option(None, "--spec", help="A spec for the preset's initializer (with an empty graph)."),
    into: str = typer.Option(None, "--into", help="Integration branch (config run.into, default agentkit/integration); "
                             "'none' turns integration off."),
    executor: str = typer.Option(None, "--executor", help="Job executor (config jobs.executor)."),
    as_json: bool = typer.Option(False, "--json", help="Events as JSON lines on stdout; the summary is the last line."),
):
    """Run coding and testing agents on the task graph until no task can progress.

    Exit 0: every task passing; 1: some dead (dependents blocked); 4: nothing can progress (the diagnosis names
    what blocks each stuck task); 130: stopped by Ctrl-C / SIGTERM (claims released, no attempt burned)."""
    from agentkit import orchestrator

    runner: list = []
    show = _Display(as_json)
    with handled(as_json):
        repo = open_repo()
        if spec is not None and not spec.is_file():
            from agentkit.errors import not_found

            raise not_found(f"--spec {spec} is not a file")
        opts = orchestrator.options(repo, concurrency=concurrency, testing_ratio=testing_ratio,
                                    count_testing=count_testing, yolo=yolo, agent=agent, agent_cmd=agent_cmd,
                                    testing_cmd=testing_cmd, init_cmd=init_cmd, spec=str(spec) if spec else None,
                                    model=model, max_attempts=max_attempts, timeout=timeout, into=into,
                                    executor=executor)
        _on_signals(runner, show)
        try:
            summary = orchestrator.run(repo, opts, on_event=show.event, runner=runner)
        finally:
            show.stop()
    show.summary(summary)
    raise typer.Exit(summary["exit_code"])


def _on_signals(runner: list, show) -> None:
    """First Ctrl-C / SIGTERM: stop claiming, kill the agents, release their claims, print the summary.
    A second one: exit at once."""
    def stop(signum, frame):
        if runner and not runner[0].stop_requested:
            runner[0].request_stop()  # os.write: a print here could land inside one the loop is making
            os.write(2, b"stopping: killing agents and releasing their claims (Ctrl-C again to exit at once)\n")
            return
        os._exit(130)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


class _Display:
    """A live status on a terminal; one line per event on stderr otherwise; JSON lines with --json."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.live = None
        self.agents: dict[str, dict] = {}
        self.counts: dict = {}
        self.band: dict = {}
        if not as_json and sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True,
                             get_renderable=self._status)
            self.live.start()

    def event(self, e: dict) -> None:
        kind, data = e["kind"], e["data"]
        if kind == "agent_update":
            if data.get("state") in ("working", "queued", "adopted"):
                self.agents[e["subject"]] = {**data, "since": e["ts"]}
            else:
                self.agents.pop(e["subject"], None)
        elif kind == "capacity_update":
            self.band = data
        if self.as_json:
            sys.stdout.write(json.dumps({"schema_version": 1, **e}, default=str) + "\n")
            sys.stdout.flush()
        elif self.live is None and kind != "log":
            say(_line(e))
        elif self.live is not None and kind not in ("log", "agent_update", "capacity_update"):
            self.live.console.print(_line(e))

    def _status(self):
        from rich.table import Table

        tbl = Table(box=None, title=f"agents ({len(self.agents)})"
                    + (f" · band {self.band.get('used')}/{self.band.get('current')}" if self.band else ""),
                    title_justify="left")
        for col in ("job", "kind", "task", "state", "elapsed"):
            tbl.add_column(col)
        now = time.time()
        for job, a in sorted(self.agents.items(), key=lambda kv: int(kv[0])):
            tbl.add_row(job, a.get("kind", ""), str(a.get("task_id") or ""), a.get("state", ""),
                        f"{now - a['since']:.0f}s")
        return tbl

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def summary(self, s: dict) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(s, default=str) + "\n")
            return
        counts = ", ".join(f"{n} {k}" for k, n in s["counts"].items() if n)
        say(f"run {s['run_id']}: {s['result']} ({counts or 'no tasks'}) in {s['wall_s']:.1f}s")
        for line in s["stuck"][:20]:
            say(f"  {line}")
        if s.get("integrated"):
            say(f"integrated {len(s['integrated'])} task(s) into {s['into']}: take it with `{s['take_it']}`")
        spent = s.get("usage") or {}
        if spent.get("cost_usd") or spent.get("input_tokens"):
            say(f"usage: {spent.get('input_tokens', 0)} tokens in, {spent.get('output_tokens', 0)} out, "
                f"${spent.get('cost_usd', 0):.4f}")
        if s.get("login"):
            say(f"hint: {s['login']['hint']}")
        say(f"debug log: {s['debug_log']}; events: `agentkit events --follow`")


def _line(e: dict) -> str:
    d = {k: v for k, v in e["data"].items() if k != "run_id"}
    if "message" in d:
        return f"{e['kind']}: {d['message']}"
    brief = " ".join(f"{k}={v}" for k, v in d.items() if k in ("state", "kind", "task_id", "status", "attempt",
                                                                 "outcome", "exit_status", "name", "reason") and v
                     is not None)
    return f"{e['kind']} {e['subject'] or ''} {brief}".strip()
