"""kill -9 during `worktree new`, `worktree remove` and `scale --provision`, at every failpoint on their paths and
at random moments; afterwards `reap`, `worktree up` and `worktree cleanup` leave a consistent repository.

A kill hits the agentkit process alone (as the OOM killer or `kill -9 PID` would), or its process group (as when
its terminal goes away): git runs in a session of its own, so it survives both and finishes, orphaned, while the
repairs wait for it. Or it hits agentkit with every git it started (as a power loss would): git dies midway and
leaves half checkouts and half removals. `pytest --chaos-long` runs hundreds of random rounds instead of a few."""

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis as redis_py

from tests.conftest import ak, git

AGENTKIT = [sys.executable, "-m", "agentkit.cli"]
PKG = Path(__file__).resolve().parents[1] / "agentkit"
FILES = 2000  # enough that a checkout lasts long enough to be killed in


def add_files(root: Path, files: int = FILES) -> None:
    """Commit `files` small files on top of main (git fast-import) and check them out."""
    chunks = [b"commit refs/heads/main\ncommitter t <t@example.com> 1700000000 +0000\ndata 5\nfiles\n",
              b"from refs/heads/main^0\n"]
    for i in range(files):
        body = f"# file {i}\n".encode()
        chunks.append(f"M 100644 inline pkg{i // 100:02d}/f{i:04d}.py\ndata {len(body)}\n".encode() + body + b"\n")
    subprocess.run(["git", "fast-import", "--quiet", "--done"], cwd=root, input=b"".join(chunks) + b"done\n",
                   check=True, capture_output=True)
    git(root, "reset", "-q", "--hard", "main")


@pytest.fixture
def big_repo(repo):
    add_files(repo)
    return repo


def launch(root: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A real agentkit command in its own process group (so a group kill spares pytest)."""
    return subprocess.Popen([*AGENTKIT, *args], cwd=root, env={**os.environ, **(env or {})}, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


KILLS = ("agentkit", "process-group", "with-git")


def kill(proc: subprocess.Popen, what: str) -> None:
    """SIGKILL the command: `agentkit` alone, its `process-group`, or agentkit `with-git` it started."""
    gits = []
    if what == "with-git":
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.name().startswith("git"):
                    gits.append(child)
            except psutil.NoSuchProcess:  # a short git (`worktree prune`) that ended while we looked
                continue
    if what == "process-group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    for child in gits:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def row(root: Path, slug: str) -> dict | None:
    """The worktree's row, read straight from agentkit's SQLite file (None before there is one)."""
    db = root / ".agents" / "agentkit.db"
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM worktrees WHERE slug = ?", (slug,)).fetchone()
        conn.close()
    except sqlite3.OperationalError:  # no database or no table yet
        return None
    return dict(found) if found else None


def wt_path(root: Path, slug: str) -> Path:
    return root.parent / f"{root.name}-worktrees" / slug


def redis_pid(root: Path) -> int | None:
    try:
        return int((root / ".agents" / "redis" / "redis.pid").read_text())
    except (OSError, ValueError):
        return None


def wait_until(proc: subprocess.Popen, reached, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not reached():
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.005)


def park(root: Path, args: list[str], point: str, reached) -> subprocess.Popen:
    """Run a command that stops at failpoint `point`; return once `reached()` shows it got there."""
    proc = launch(root, *args, env={"AGENTKIT_FAILPOINT": point})
    try:
        wait_until(proc, reached, point)
    except BaseException:
        kill(proc, "process-group")  # never leave a command parked for an hour behind a failed test
        raise
    time.sleep(0.1)  # the observable state shows a moment before the process parks
    return proc


def ok(*args: str, cwd: Path, env: dict | None = None):
    res = ak(*args, cwd=cwd, env=env)
    assert res.code == 0, f"agentkit {' '.join(args)} exited {res.code}: {res.err}"
    assert "Traceback" not in res.err and "internal error" not in res.err, res.err
    return res


def recover(root: Path, how: str, slug: str) -> None:
    """What a person (or a cron job) runs after a crash: `up` of the slug if agentkit has it, else `cleanup`."""
    ok("reap", "--json", cwd=root)
    if how == "up" and row(root, slug) is not None:
        ok("worktree", "up", slug, "--json", cwd=root)
    else:
        ok("worktree", "cleanup", "--yes", "--json", cwd=root)


def seeded(name: str) -> random.Random:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(10**6))
    print(f"{name}: CHAOS_SEED={seed}")  # shown when the test fails, to replay it
    return random.Random(seed)


def env_file(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def assert_consistent(root: Path) -> list[dict]:
    """What recovery must leave: every worktree active on a whole checkout of its branch with an env file naming
    the running Redis, one slot each; no git worktree, branch, folder, git lock or temp file without a row."""
    rows = ok("worktree", "list", "--json", cwd=root).json["worktrees"]
    assert [(w["slug"], w["status"]) for w in rows if w["status"] != "active"] == []
    dbs = [w["redis_db"] for w in rows]
    assert len(set(dbs)) == len(dbs), f"duplicate slots: {dbs}"
    red = ok("redis", "status", "--json", cwd=root).json
    assert red["running"] and redis_py.Redis.from_url(red["url"]).ping()
    for w in rows:
        path = Path(w["path"])
        assert git(path, "status", "--porcelain") == "", f"{w['slug']} is not a whole checkout"
        assert git(path, "rev-parse", "--abbrev-ref", "HEAD") == w["branch"]
        env = env_file(Path(w["env_file"]))
        assert env["REDIS_URL"] == w["redis_url"] == f"{red['url'][:-2]}/{w['redis_db']}"
    porcelain = git(root, "worktree", "list", "--porcelain")
    linked = {line[len("worktree "):] for line in porcelain.splitlines() if line.startswith("worktree ")}
    assert linked - {str(root)} == {w["path"] for w in rows}
    assert "locked" not in porcelain and "prunable" not in porcelain
    branches = git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/").split()
    assert sorted(branches) == sorted(w["branch"] for w in rows), "a branch agentkit made outlived its worktree"
    folder = root.parent / f"{root.name}-worktrees"
    if folder.exists():
        assert sorted(p.name for p in folder.iterdir()) == sorted(w["slug"] for w in rows)
        assert list(folder.glob("*/.*.tmp")) == [], "a temp file of a killed write was left"
    assert [p for p in (root / ".git").rglob("*.lock")] == []
    return rows


# ---- each failpoint -------------------------------------------------------------------------------------

def _new(root: Path):
    return ["worktree", "new", "k"]


def _remove(root: Path):
    ok("worktree", "new", "k", cwd=root)
    return ["worktree", "remove", "k"]


def _provision(root: Path):
    ok("redis", "start", cwd=root, env={"AGENTKIT_REDIS_DATABASES": "16"})
    ok("worktree", "new", "k", cwd=root)
    return ["scale", "--provision", "--target", "32", "--yes"]


def _parked_in_checkout(root: Path) -> bool:
    return (root / ".git" / "worktrees" / "k").is_dir()


def _checked_out(root: Path) -> bool:
    return wt_path(root, "k").is_dir() and not (root / ".git" / "worktrees" / "k" / "locked").exists()


def _removed(root: Path) -> bool:
    return not wt_path(root, "k").exists() and not (root / ".git" / "worktrees" / "k").exists()


POINTS = {  # failpoint: (the command, made ready; how to tell the process is parked there)
    "worktree-new:allocated": (_new, lambda root, before: row(root, "k") is not None),
    "worktree-add:branch-recorded": (_new, lambda root, before: (row(root, "k") or {}).get("branch_created") == 1),
    "worktree-add:checking-out": (_new, lambda root, before: _parked_in_checkout(root)),
    "worktree-new:added": (_new, lambda root, before: _checked_out(root)),
    "worktree-remove:marked": (_remove, lambda root, before: (row(root, "k") or {}).get("status") == "removing"),
    "worktree-remove:removed": (_remove, lambda root, before: _removed(root)),
    "provision:stopped": (_provision, lambda root, before: redis_pid(root) is None),
    "redis-start:spawned": (_provision, lambda root, before: redis_pid(root) not in (None, before)),
}
CASES = [  # each failpoint once, with the kinds of kill and of repair spread over them
    ("worktree-new:allocated", "process-group", "up"),
    ("worktree-add:branch-recorded", "agentkit", "cleanup"),
    ("worktree-add:checking-out", "process-group", "up"),  # git checks out on, orphaned: repairs wait for it
    ("worktree-add:checking-out", "with-git", "cleanup"),  # a half checkout
    ("worktree-new:added", "with-git", "up"),
    ("worktree-remove:marked", "agentkit", "up"),
    ("worktree-remove:removed", "process-group", "cleanup"),
    ("provision:stopped", "agentkit", "up"),  # up: a command that needs Redis brings it back
    ("redis-start:spawned", "process-group", "up"),
]


def test_every_failpoint_on_these_paths_has_a_case():
    names = set()
    for path in PKG.rglob("*.py"):
        names |= set(re.findall(r'failpoints\.reach\("([^"]+)"\)', path.read_text()))
    assert {n for n in names if n.startswith(("worktree-", "provision", "redis-"))} == set(POINTS)
    assert {point for point, _kill, _how in CASES} == set(POINTS)


@pytest.mark.parametrize(("point", "kill_what", "how"), CASES)
def test_kill_9_at_a_failpoint_then_recovery(big_repo, point, kill_what, how):
    prepare, parked = POINTS[point]
    args = prepare(big_repo)
    before = redis_pid(big_repo)
    proc = park(big_repo, args, point, lambda: parked(big_repo, before))
    kill(proc, kill_what)
    recover(big_repo, how, "k")
    rows = assert_consistent(big_repo)
    assert [w["slug"] for w in rows] == (["k"] if how == "up" else [])
    if rows:
        ok("worktree", "remove", "k", cwd=big_repo)
        assert_consistent(big_repo)


def test_a_first_start_killed_before_it_recorded_redis_is_adopted(big_repo):
    """The managed Redis's starter killed after redis-server runs but before managed.json says so: the next
    command adopts that server instead of starting a second one."""
    proc = park(big_repo, ["worktree", "new", "k"], "redis-start:spawned", lambda: redis_pid(big_repo) is not None)
    pid = redis_pid(big_repo)
    kill(proc, "process-group")
    assert not (big_repo / ".agents" / "redis" / "managed.json").exists()
    ok("worktree", "new", "k2", cwd=big_repo)
    assert ok("redis", "status", "--json", cwd=big_repo).json["pid"] == pid, "the running server was adopted"
    assert [w["slug"] for w in assert_consistent(big_repo)] == ["k2"]


# ---- a half checkout, made for real -------------------------------------------------------------------

def half_checkout(root: Path, slug: str) -> None:
    """Kill `worktree new` and its git mid-checkout: as soon as git has registered the worktree (locked
    "initializing") and before it is done. Retried with a fresh attempt in the rare case git was quicker."""
    admin = root / ".git" / "worktrees" / slug
    for _attempt in range(20):
        proc = launch(root, "worktree", "new", slug)
        wait_until(proc, lambda: (admin / "locked").exists() or (admin / "index").exists(), "the checkout")
        kill(proc, "with-git")
        if (admin / "locked").exists():
            return
        ok("worktree", "cleanup", "--yes", cwd=root)
    pytest.fail("git always finished its checkout before the kill")


@pytest.mark.parametrize("how", ["up", "cleanup", "remove-force"])
def test_a_half_checkout_is_redone_or_removed(big_repo, how):
    half_checkout(big_repo, "h")
    listed = ok("worktree", "list", "--json", cwd=big_repo).json["worktrees"]
    assert [(w["slug"], w["status"]) for w in listed] == [("h", "incomplete")], "never active, never merged"
    if how == "up":
        up = ok("worktree", "up", "h", "--json", cwd=big_repo).json
        assert "worktree" in up["repaired"] and up["status"] == "active"
        assert len(git(Path(up["path"]), "ls-files").splitlines()) == FILES + 1
    elif how == "cleanup":
        assert [r["slug"] for r in ok("worktree", "cleanup", "--yes", "--json", cwd=big_repo).json["removed"]] == ["h"]
    else:
        ok("worktree", "remove", "h", "--force", cwd=big_repo)
    assert [w["slug"] for w in assert_consistent(big_repo)] == (["h"] if how == "up" else [])


def half_removal(root: Path, slug: str) -> None:
    """Kill `worktree remove` and its git once git has deleted the folder's .git file but not yet the rest
    (retried if git was quicker): a folder git still lists but can no longer validate, so not remove."""
    folder = wt_path(root, slug)
    for _attempt in range(20):
        ok("worktree", "new", slug, cwd=root)
        proc = launch(root, "worktree", "remove", slug)
        wait_until(proc, lambda: not (folder / ".git").exists(), "the removal")
        kill(proc, "with-git")
        if folder.exists():
            return
        ok("worktree", "cleanup", "--yes", cwd=root)
    pytest.fail("git always finished removing before the kill")


@pytest.mark.parametrize("how", ["up", "cleanup"])
def test_a_half_removal_is_finished_by_cleanup_or_redone_by_up(big_repo, how):
    half_removal(big_repo, "h")
    assert [w["status"] for w in ok("worktree", "list", "--json", cwd=big_repo).json["worktrees"]] == ["incomplete"]
    recover(big_repo, how, "h")
    assert [w["slug"] for w in assert_consistent(big_repo)] == (["h"] if how == "up" else [])


def test_a_leftover_env_temp_file_is_removed_by_up_and_never_blocks_remove(big_repo):
    """atomic_write killed between its temp file and the rename leaves `..agent.env.XXXXXXXX.tmp` (its temp files
    are `.<name>.<random>.tmp`) in the worktree."""
    proc = park(big_repo, ["worktree", "new", "k"], "worktree-new:added", lambda: _checked_out(big_repo))
    kill(proc, "agentkit")
    temp = wt_path(big_repo, "k") / "..agent.env.x8a1b2c3.tmp"
    temp.write_text("REDIS_URL=half-written")
    up = ok("worktree", "up", "k", "--json", cwd=big_repo).json
    assert not temp.exists() and "worktree" not in up["repaired"], "the whole checkout is kept, the temp file goes"
    temp.write_text("REDIS_URL=half-written")  # a kill in up's own rewrite of an active worktree's env file
    ok("worktree", "remove", "k", cwd=big_repo)
    assert assert_consistent(big_repo) == []


def test_a_branch_you_brought_survives_a_killed_new_and_its_cleanup(big_repo):
    git(big_repo, "branch", "mine")
    proc = park(big_repo, ["worktree", "new", "k", "--branch", "mine"], "worktree-add:checking-out",
                lambda: _parked_in_checkout(big_repo))
    kill(proc, "with-git")
    assert row(big_repo, "k")["branch_created"] == 0
    ok("worktree", "cleanup", "--yes", cwd=big_repo)
    assert git(big_repo, "branch", "--list", "mine") != ""
    assert assert_consistent(big_repo) == []


# ---- random moments ---------------------------------------------------------------------------------

def duration(root: Path, *args: str) -> float:
    started = time.monotonic()
    ok(*args, cwd=root)
    return time.monotonic() - started


def test_kill_9_at_random_moments_of_new(big_repo, chaos_rounds):
    rng = seeded("new")
    span = duration(big_repo, "worktree", "new", "warm")
    ok("worktree", "remove", "warm", cwd=big_repo)
    for i in range(chaos_rounds(3)):
        slug = f"r{i:03d}"
        proc = launch(big_repo, "worktree", "new", slug)
        time.sleep(rng.uniform(0, span * 1.2))
        kill(proc, rng.choice(KILLS))
        recover(big_repo, rng.choice(["up", "cleanup"]), slug)
        if assert_consistent(big_repo):
            ok("worktree", "remove", slug, cwd=big_repo)


def test_kill_9_at_random_moments_of_remove(big_repo, chaos_rounds):
    rng = seeded("remove")
    ok("worktree", "new", "warm", cwd=big_repo)
    span = duration(big_repo, "worktree", "remove", "warm")
    for i in range(chaos_rounds(3)):
        slug = f"r{i:03d}"
        ok("worktree", "new", slug, cwd=big_repo)
        proc = launch(big_repo, "worktree", "remove", slug)
        time.sleep(rng.uniform(0, span * 1.2))
        # not with-git: a git killed inside a ref transaction (`branch -D`) leaves a packed-refs.lock that only
        # a person may take away (docs/worktrees.md); half removals are made on purpose below
        kill(proc, rng.choice(KILLS[:2]))
        recover(big_repo, rng.choice(["up", "cleanup"]), slug)
        if assert_consistent(big_repo):
            ok("worktree", "remove", slug, cwd=big_repo)


def test_kill_9_at_random_moments_of_provision(repo, chaos_rounds):
    rng = seeded("provision")
    ok("redis", "start", cwd=repo, env={"AGENTKIT_REDIS_DATABASES": "16"})
    wt = ok("worktree", "new", "keep", "--json", cwd=repo).json
    redis_py.Redis.from_url(wt["redis_url"]).set("survivor", "yes")
    redis_py.Redis.from_url(wt["redis_url"]).save()
    databases, target = 16, 20
    span = duration(repo, "scale", "--provision", "--target", str(target), "--yes")
    for _round in range(chaos_rounds(3)):
        databases, target = ok("redis", "status", "--json", cwd=repo).json["databases"], target + 4
        proc = launch(repo, "scale", "--provision", "--target", str(target), "--yes")
        time.sleep(rng.uniform(0, span * 1.2))
        kill(proc, rng.choice(KILLS[:2]))
        recover(repo, "up", "keep")
        [keep] = assert_consistent(repo)
        assert ok("redis", "status", "--json", cwd=repo).json["databases"] in (databases, target)
        assert redis_py.Redis.from_url(keep["redis_url"]).get("survivor") == b"yes"
