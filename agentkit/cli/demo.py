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
- {id: 2, name: cart api, depends_on: [db schema]}
- {id: 3, name: checkout api, depends_on: [db schema]}
- {id: 4, name: checkout page, depends_on: [cart api, checkout api]}
- {id: 5, name: docs, priority: 2000}
"""

# A stand-in coding agent: it commits a file in its worktree; the checkout api agent fails its tests.
AGENT = (
    'echo "agent on $AGENTKIT_SLUG (redis db $REDIS_DB, port $PORT)"; '
    'case "$AGENTKIT_SLUG" in *checkout-api*) echo "tests failed"; exit 1;; esac; '
    'echo done > "work-$AGENTKIT_SLUG.txt" && git add . && git commit -qm "agent work" && echo committed'
)


def _tasks_and_jobs(repo) -> None:
    from agentkit import claims, jobs, tasks, worktrees
    from agentkit.errors import AgentkitError

    _step("A task graph: dependencies, no cycles, a scored ready set")
    path = repo.paths.agents / "demo-tasks.yaml"
    path.write_text(TASKS)
    tasks.import_file(repo, path)
    try:
        tasks.dep_add(repo, 1, 4)
    except AgentkitError as exc:
        print(f"  refused: {exc.message}")
    for t in tasks.ready(repo):
        print(f"  ready: {t['id']} {t['name']:<12} score {t['score']} {t['score_parts']}")

    _step("Agents claim tasks atomically and run as supervised jobs (2 at a time here)")
    os.environ["AGENTKIT_JOBS_MAX_CONCURRENCY"] = "2"
    repo.config.set("jobs.max_concurrency", 2, "demo")
    spawned: list[int] = []
    while True:  # the loop `agentkit run` will automate: claim → worktree → spawn, until nothing can progress
        while True:
            try:
                claim = claims.claim(repo, agent=f"agent-{len(spawned) + 1}", lease="10m")
            except AgentkitError:
                break
            try:
                wt = worktrees.new(repo, claim["worktree"])
            except AgentkitError:  # a retry of a failed task reuses its worktree
                wt = worktrees.up(repo, claim["worktree"])
            job = jobs.spawn(repo, ["sh", "-c", AGENT], worktree=wt["slug"], claim_id=claim["claim_id"],
                             timeout="1m", env=[f"{k}={v}" for k, v in GIT_IDENTITY.items()])
            spawned.append(job["job_id"])
            print(f"  {claim['agent']} claimed task {claim['task_id']} ({claim['task']['name']}), "
                  f"fence {claim['fence']} → job {job['job_id']} {job['state']} in {wt['slug']}")
        active = [j for j in spawned if jobs.get(repo, j)["state"] in ("queued", "running")]
        if not active:
            break
        jobs.wait(repo, active, any_=True, timeout=60)
    for job in jobs.list_jobs(repo):
        print(f"  job {job['job_id']}: {job['state']:<9} exit {job['exit_status']}  {job['worktree']}")
    st = claims.task_status(repo)
    print("  tasks: " + ", ".join(f"{k} {v}" for k, v in st["counts"].items() if v))
    if st.get("diagnosis"):
        print("  nothing ready, because:\n    " + tasks.describe_stuck(st["diagnosis"]).replace("\n  ", "\n    "))

    _step("A hung agent with background children: the timeout kills its whole tree")
    job = jobs.spawn(repo, ["sh", "-c", "sleep 1000 & setsid sleep 1000 & sleep 1000"], timeout="1s")
    done = jobs.wait(repo, [job["job_id"]], timeout=60)["jobs"][0]
    from agentkit import procs

    print(f"  job {job['job_id']}: {done['state']}, exit status {done['exit_status']}, "
          f"processes left: {len(procs.with_token(jobs.get(repo, job['job_id'])['token']))}")
    h = jobs.health(repo)
    print(f"  health: active {h['active']}, queued {h['queued']}, capacity {h['capacity']}")


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

            _tasks_and_jobs(repo)

            _step("Next: `agentkit worktree new feat-x --json`, `agentkit claim --agent me`, "
                  "`agentkit spawn --worktree auto -- your-agent`, `agentkit snapshot --json`")
            if not keep:
                redis.stop(repo)
        finally:
            repo.close()
    if keep:
        print(f"\nkept {folder} (stop its Redis with: agentkit -C {root} redis stop)")
    elif directory is None:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.parent / f"{root.name}-worktrees", ignore_errors=True)
