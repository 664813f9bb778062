"""`agentkit demo`: a sample repository and a walk through what exists so far, on the embedded defaults."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import typer

from agentkit.cli.common import handled, table

# The sample repo and its stand-in agents commit as "demo", whatever git identity the machine has (or lacks).
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.com",
                "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.com"}

SAMPLE = {
    "README.md": "# shop\n\nA sample app that several agents work on at once.\n",
    "app/__init__.py": "",
    "app/cart.py": "def total(items):\n    return sum(price for _, price in items)\n",
    "app/cache.py": "import os\n\nREDIS_URL = os.environ.get('REDIS_URL', 'redis://localhost:6379/0')\n",
    "tests/test_cart.py": "from app.cart import total\n\n\ndef test_total():\n    assert total([('a', 2)]) == 2\n",
}


def _step(text: str) -> None:
    typer.secho(f"\n▸ {text}", bold=True)


def _sample_repo(folder: Path) -> Path:
    root = folder / "shop"
    for name, body in SAMPLE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    env = {**os.environ, **GIT_IDENTITY}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "sample app"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env)
    return root


TASKS = """
- {id: 1, name: db schema, priority: 10}
- {id: 2, name: models, depends_on: [db schema]}
- {id: 3, name: cart api, depends_on: [models]}
- {id: 4, name: checkout api, depends_on: [models]}
- {id: 5, name: payments, depends_on: [models]}
- {id: 6, name: cart page, depends_on: [cart api]}
- {id: 7, name: checkout page, depends_on: [cart api, checkout api]}
- {id: 8, name: payment page, depends_on: [payments]}
- {id: 9, name: order emails, depends_on: [checkout api]}
- {id: 10, name: admin, depends_on: [models]}
- {id: 11, name: docs, priority: 2000}
- {id: 12, name: e2e tests, depends_on: [cart page, checkout page, payment page]}
"""

# A stand-in coding agent ($1 task id, $2 attempt, $3 name): it builds on what its dependencies committed, adds a
# file and commits it; the checkout api's first attempt fails its tests.
AGENT = (
    'echo "agent: task $1 ($3), attempt $2, in $AGENTKIT_SLUG, redis db $REDIS_DB, port $PORT"; sleep 0.3; '
    'if [ "$1" = 4 ] && [ "$2" = 1 ]; then echo "tests failed"; exit 1; fi; '
    'mkdir -p features && echo "$3" > "features/task-$1.txt" && git add -A && git commit -qm "task $1: $3"'
)
TESTER = 'echo "re-checking task $1"; sleep 0.2; ls features >/dev/null'


def _orchestrate(repo) -> None:
    from agentkit import integration, orchestrator, tasks
    from agentkit.errors import AgentkitError

    _step("A task graph: dependencies, no cycles, a scored ready set")
    path = repo.paths.agents / "demo-tasks.yaml"
    path.write_text(TASKS)
    tasks.import_file(repo, path)
    try:
        tasks.dep_add(repo, 1, 12)
    except AgentkitError as exc:
        print(f"  refused: {exc.message}")
    for t in tasks.ready(repo):
        print(f"  ready: {t['id']} {t['name']:<12} score {t['score']} {t['score_parts']}")

    _step("`agentkit run -c 3`: coding agents in their own worktrees, testing agents after each pass, every pass "
          "merged into agentkit/integration")
    os.environ.update(GIT_IDENTITY)
    opts = orchestrator.options(repo, concurrency=3, testing_ratio=1, agent_cmd=f"sh -c '{AGENT}' agent {{task_id}} "
                                f"{{attempt}} {{task_name}}", testing_cmd=f"sh -c '{TESTER}' tester {{task_id}}")

    def show(event: dict) -> None:
        d = event["data"]
        if event["kind"] == "feature_update" and d["status"] != "in_progress":
            print(f"  task {event['subject']:>2} {d['name']:<14} → {d['status']}"
                  + (f" ({d['reason']})" if d.get("reason") else ""))
        elif event["kind"] == "agent_update" and d.get("state") == "working" and d["kind"] == "testing":
            print(f"  testing agent re-verifies task {d['task_id']}")

    started = time.perf_counter()
    summary = orchestrator.run(repo, opts, on_event=show)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
    print(f"  run {summary['run_id']}: {summary['result']} ({counts}) in {time.perf_counter() - started:.1f}s, "
          f"exit {summary['exit_code']}")
    print(f"  integrated {len(summary['integrated'])} tasks into {summary['into']}:")
    for entry in integration.log(repo, summary["into"], limit=4):
        print(f"    {entry['commit'][:8]} {entry['subject']}")
    print(f"  take it with `{summary['take_it']}`; debug log {Path(summary['debug_log']).name}")
    return summary


def _hung_agent(repo) -> None:
    from agentkit import jobs, procs

    _step("A hung agent with background children: the timeout kills its whole tree")
    job = jobs.spawn(repo, ["sh", "-c", "sleep 1000 & setsid sleep 1000 & sleep 1000"], timeout="1s")
    done = jobs.wait(repo, [job["job_id"]], timeout=60)["jobs"][0]
    print(f"  job {job['job_id']}: {done['state']}, exit status {done['exit_status']}, "
          f"processes left: {len(procs.with_token(jobs.get(repo, job['job_id'])['token']))}")


def _hooks_and_doctor(repo) -> None:
    import sys

    from agentkit import doctor, hooks, worktrees

    _step("Git hooks: a plain `git worktree add` is adopted (Redis DB, ports, env file) by post-checkout")
    done = hooks.install(repo)
    print("  installed: " + ", ".join(h["name"] for h in done["hooks"]) + f" in {done['hooks_dir']}")
    plain = repo.root.parent / "plain-checkout"
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # the hook calls agentkit
    subprocess.run(["git", "worktree", "add", "-q", "-b", "plain", str(plain)], cwd=repo.root, check=True,
                   env={**os.environ, **GIT_IDENTITY, "PATH": path}, capture_output=True)
    deadline = time.monotonic() + 20
    found = None
    while found is None and time.monotonic() < deadline:
        found = next((w for w in worktrees.list_all(repo) if w["path"] == str(plain) and w["redis_db"]), None)
        time.sleep(0.1)
    ports = f"{found['ports'][0]}-{found['ports'][-1]}" if found and found["ports"] else "none"
    print(f"  {plain.name}: " + (f"adopted as {found['slug']}, redis db {found['redis_db']}, ports {ports}"
                                 if found else "still being adopted in the background"))

    _step("`agentkit doctor`: every part of the set-up checked, each problem with its fix")
    report = doctor.run(repo.root)
    for c in report["checks"]:
        print(f"  {c['status']:<4} {c['name']:<12} {c['message'][:90]}"
              + (f"\n       fix: {c['fix']}" if c["status"] != "ok" and c.get("fix") else ""))
    if found:
        worktrees.remove(repo, found["slug"], force=True)
    hooks.uninstall(repo)


def run(directory: Path | None, agents: int, keep: bool) -> None:
    from agentkit import capacity, redis, worktrees
    from agentkit.repo import Repo
    from agentkit.snapshot import snapshot

    folder = Path(directory).resolve() if directory else Path(tempfile.mkdtemp(prefix="agentkit-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    with handled(False):
        _step(f"A sample repository at {folder / 'shop'}")
        root = _sample_repo(folder)
        repo = Repo(root)
        try:
            _step("The managed Redis: started on first need, bound to 127.0.0.1 on a free port")
            st = redis.start(repo)
            print(f"  {st['url']}  databases={st['databases']}  data in {st['dir']}")

            _step(f"{agents} agents each get a worktree, a Redis DB, a port block and an env file")
            started = time.perf_counter()
            made = []
            for i in range(agents):
                wt = worktrees.new(repo, f"agent-{i + 1:02d}")
                made.append(wt)
                if wt["band_change"]:
                    c = wt["band_change"]
                    print(f"  band grew {c['from']} → {c['to']} slots for {wt['slug']} (no Redis restart)")
            print(f"  {agents} worktrees in {time.perf_counter() - started:.1f}s")
            table(made[:3] + made[-2:], ["slug", "branch", "redis_db", "ports", "path"])
            print(f"  {Path(made[0]['env_file']).name} of {made[0]['slug']}:")
            for line in Path(made[0]["env_file"]).read_text().splitlines()[1:6]:
                print(f"    {line}")

            _step("The band: soft slots inside the physical ceiling (`agentkit scale status`)")
            cap = capacity.status(repo)
            print(f"  floor {cap['floor']}, step {cap['step']}, current {cap['current']}, used {cap['used']}, "
                  f"free {cap['free']}, physical_max {cap['physical_max']}")

            _step("Removing a worktree flushes its DB, so a reused slot never shows stale keys")
            victim = made[0]
            redis.client(victim["redis_url"]).set("session:42", "cart=3")
            worktrees.remove(repo, victim["slug"], force=True)
            keys = redis.client(victim["redis_url"]).dbsize()
            print(f"  removed {victim['slug']}; keys left in DB {victim['redis_db']}: {keys}")

            _step("Agents finish; the band shrinks back step by step, never below the floor")
            for wt in made[1:]:
                result = worktrees.remove(repo, wt["slug"], force=True)
                if result["band_change"]:
                    c = result["band_change"]
                    print(f"  band shrank {c['from']} → {c['to']} slots after {wt['slug']}")
            snap = snapshot(repo)
            print(f"  worktrees: {len(snap['worktrees'])}, band: {snap['capacity']['current']} slots")
            from agentkit.events import recent

            kinds: dict[str, int] = {}
            for event in recent(repo.store, limit=10_000):
                kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
            print("  event log: " + ", ".join(f"{k}×{n}" for k, n in sorted(kinds.items())))

            _orchestrate(repo)
            _hung_agent(repo)
            _hooks_and_doctor(repo)

            where = "" if keep or directory else " (this sample goes away now: rerun with --keep to look around)"
            _step(f"Where to look{where}: `agentkit -C {root} events --kind feature_update`, `agentkit -C {root} "
                  f"snapshot --json`, `git -C {root} log --oneline agentkit/integration`. Your own agents: "
                  "`agentkit run -c 4 --agent claude`")
            if not keep:
                redis.stop(repo)
        finally:
            repo.close()
    if keep:
        print(f"\nkept {folder} (stop its Redis with: agentkit -C {root} redis stop)")
    elif directory is None:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.parent / f"{root.name}-worktrees", ignore_errors=True)
