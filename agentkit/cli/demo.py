"""`agentkit demo`: a sample repository and a walk through what exists so far, on the embedded defaults."""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import typer

from agentkit.cli.common import handled, table

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
    env = {"GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.com",
           "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.com", "PATH": "/usr/bin:/bin"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "sample app"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env)
    return root


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

            _step("Next: `agentkit worktree new feat-x --json`, `agentkit scale status`, `agentkit snapshot --json`")
            if not keep:
                redis.stop(repo)
        finally:
            repo.close()
    if keep:
        print(f"\nkept {folder} (stop its Redis with: agentkit -C {root} redis stop)")
    elif directory is None:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.parent / f"{root.name}-worktrees", ignore_errors=True)
