"""A scripted coding agent for the orchestrator's tests: what it does for a task is read from a plan file.

    python fake_agent.py PLAN TASK_NAME ATTEMPT [KIND]

PLAN is a JSON file {task name: behaviour}; "*" is the default. A behaviour may have:
- "sleep" (seconds); "exit" (code); "fail_attempts" (exit 1 on attempts up to this); "hang_attempts" (sleep for
  ever on attempts up to this); "hang_once" (sleep for ever the first time only); "grandchild" (leave a
  background sleeper behind)
- "write" ({path: text}, committed unless "no_commit"); "expect" ([paths] that must exist, else exit 3)
- "report" ("pass"/"fail": `agentkit task pass|fail` itself, then "sleep_after" seconds, then "exit")
- "rate_limit_once" (print a rate-limit line and exit 1 the first time); "login" (print "Not logged in", exit 1)
- "env_file_matches" (exit 4 unless the worktree's env file names our task, claim and fence)
Every start and end is appended to PLAN's folder/record.jsonl."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def record(folder: Path, **data) -> None:
    with open(folder / "record.jsonl", "a") as fh:
        fh.write(json.dumps({"t": time.time(), "pid": os.getpid(), **data}) + "\n")


def main() -> int:
    plan_path, name, attempt = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    kind = sys.argv[4] if len(sys.argv) > 4 else "coding"
    plan = json.loads(plan_path.read_text())
    how = {**plan.get("*", {}), **plan.get(name, {})} if kind == "coding" else plan.get("#testing", {})
    folder = plan_path.parent
    record(folder, task=name, attempt=attempt, kind=kind, event="start", cwd=os.getcwd(),
           task_id=os.environ.get("AGENTKIT_TASK_ID"))
    print(f"fake agent: {kind} {name} attempt {attempt}", flush=True)
    code = act(how, folder, name, attempt)
    record(folder, task=name, attempt=attempt, kind=kind, event="end", code=code)
    return code


def act(how: dict, folder: Path, name: str, attempt: int) -> int:
    if how.get("env_file_matches"):  # the worktree's env file names the same task, claim and fence as our env
        pairs = dict(line.split("=", 1) for line in Path(".agent.env").read_text().splitlines() if "=" in line
                     and not line.startswith("#"))
        for key in ("AGENTKIT_TASK_ID", "AGENTKIT_CLAIM_ID", "AGENTKIT_FENCE"):
            if pairs.get(key) != os.environ.get(key):
                print(f"env file {key}={pairs.get(key)} but env {os.environ.get(key)}", flush=True)
                return 4
    for path in how.get("expect", []):
        if not Path(path).exists():
            print(f"missing {path}", flush=True)
            return 3
    if how.get("login"):
        print("Not logged in · Please run /login", flush=True)
        return 1
    marker = folder / f"limited-{name}"
    if how.get("rate_limit_once") and not marker.exists():
        marker.write_text("1")
        print(f"RATE LIMITED until {time.time() + how['rate_limit_once']}", flush=True)
        return 1
    if attempt <= how.get("hang_attempts", 0):
        time.sleep(3600)
    hung = folder / f"hung-{name}"
    if how.get("hang_once") and not hung.exists():
        hung.write_text("1")
        time.sleep(3600)
    if how.get("grandchild"):
        subprocess.Popen(["sleep", "300"], start_new_session=False)
    time.sleep(how.get("sleep", 0))
    for path, text in how.get("write", {}).items():
        Path(path).write_text(text)
    if how.get("write") and not how.get("no_commit"):
        subprocess.run(["git", "add", "-A"], check=True)
        subprocess.run(["git", "commit", "-qm", f"{name} attempt {attempt}"], check=True)
    if attempt <= how.get("fail_attempts", 0):
        return 1
    if how.get("report"):
        subprocess.run([sys.executable, "-m", "agentkit.cli", "task", how["report"], os.environ["AGENTKIT_TASK_ID"],
                        "--fence", os.environ["AGENTKIT_FENCE"]], check=True)
        time.sleep(how.get("sleep_after", 0))
    return how.get("exit", 0)


if __name__ == "__main__":
    sys.exit(main())
