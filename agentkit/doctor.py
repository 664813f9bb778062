"""`agentkit doctor`: read-only checks of everything agentkit depends on, each with its status, cause and fix.

Nothing here changes state: the state DB is opened read-only (never created or migrated), executors are only
polled, expired claims and lost jobs are reported, not recovered (`agentkit reap` does that). A check that
raises becomes a failed check naming the error, so the report always comes out whole."""

import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from agentkit import procs
from agentkit.errors import FAILURES

SCHEMA_VERSION = 1
OK, WARN, FAIL = "ok", "warn", "fail"
GIT_MINIMUM = (2, 31)  # `rev-parse --path-format=absolute`, `worktree list --porcelain` with prunable/locked
GIT_INTEGRATION = (2, 38)  # `merge-tree --write-tree`, which `agentkit run` merges passed work with


def check(name: str, status: str, message: str, fix: str | None = None) -> dict:
    return {"name": name, "status": status, "message": message, "fix": fix}


def run(start: Path | None = None) -> dict:
    """Every check, in order; outside a git repository it raises the usual StateError (exit 2)."""
    from agentkit.repo import Repo
    from agentkit.state.paths import resolve

    paths = resolve(start)
    checks = [_guarded("git", lambda: _git(paths.root))]
    try:
        repo = Repo(start)
    except FAILURES as exc:
        checks.append(check("config", FAIL, exc.message, exc.hint))
        return _report(checks)
    checks.append(check("config", OK, "the configuration loads (`agentkit config show` lists it)"))
    state = _guarded("state_db", lambda: _state_db(repo))
    checks.append(state)
    store_open = "store" in repo.__dict__
    steps: list[tuple[str, Callable[[], dict | None]]] = [
        ("redis_server", lambda: _redis_server(repo)),
        ("redis", lambda: _redis(repo, store_open)),
        ("locks", lambda: _locks(repo)),
    ]
    if store_open:
        steps += [("worktrees", lambda: _worktrees(repo)), ("jobs", lambda: _jobs(repo)),
                  ("claims", lambda: _claims(repo))]
    steps += [("agents_md", lambda: _agents_md(repo, start)), ("hooks", lambda: _hooks(repo))]
    for name, step in steps:
        found = _guarded(name, step)
        if found is not None:
            checks.append(found)
    if store_open:
        repo.close()
    return _report(checks)


def _report(checks: list[dict]) -> dict:
    return {"schema_version": SCHEMA_VERSION, "healthy": all(c["status"] != FAIL for c in checks), "checks": checks}


def _guarded(name: str, step: Callable[[], dict | None]) -> dict | None:
    """A check that raises is a failed check naming the error, never a traceback."""
    try:
        return step()
    except FAILURES as exc:
        return check(name, FAIL, exc.message, exc.hint)
    except Exception as exc:  # noqa: BLE001 - doctor reports whatever broke, and goes on with the other checks
        return check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                     "rerun with AGENTKIT_DEBUG=1 on the command this concerns; report it if it is a bug")


# ---- the checks ------------------------------------------------------------------------------------------

def _git(root: Path) -> dict:
    from agentkit import git

    try:
        shown = git.run(["--version"], root, check=False).stdout.strip()
    except FileNotFoundError:
        return check("git", FAIL, "git is not installed", "install git 2.38 or newer")
    found = re.search(r"(\d+)\.(\d+)", shown)
    version = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    listed = git.run(git.WORKTREE_LIST, root, check=False)
    if listed.returncode != 0:
        return check("git", FAIL, f"`git worktree list` fails in {root}: {listed.stderr.strip()}",
                     "upgrade git (2.38 or newer) or repair the repository (git fsck)")
    if version < GIT_MINIMUM:
        return check("git", FAIL, f"{shown} is too old: agentkit needs git {'.'.join(map(str, GIT_MINIMUM))}",
                     "upgrade git to 2.38 or newer")
    if version < GIT_INTEGRATION:
        return check("git", WARN, f"{shown}: worktrees work, but `agentkit run` merges with `git merge-tree "
                                  "--write-tree` (git 2.38)", "upgrade git to 2.38 or newer, or run with --into none")
    return check("git", OK, f"{shown}, worktrees supported")


def _state_db(repo) -> dict:
    """Its schema version, read without creating, migrating or writing anything; at the current version the
    store is opened read-only for the checks that read state."""
    from agentkit.state.store import SCHEMA_VERSION as CURRENT
    from agentkit.state.store import Store

    db = repo.paths.db
    if not db.exists():
        return check("state_db", OK, f"no state database yet ({db}): the first command that needs one creates it")
    conn = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=5, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a damaged file fails here
    except sqlite3.Error as exc:
        conn.close()
        return check("state_db", FAIL, f"state database {db} is unreadable ({exc}); the checks that read state "
                                       "were skipped", f"move it aside (mv {db} {db}.broken) and rerun")
    if version > CURRENT:
        conn.close()
        return check("state_db", FAIL, f"state database {db} has schema version {version}, newer than this "
                                       f"agentkit understands ({CURRENT}); the checks that read state were skipped",
                     "upgrade agentkit (pip install -U agentkit) to use this repository's state")
    if version < CURRENT:
        conn.close()
        return check("state_db", WARN, f"state database {db} has schema version {version}; the next command that "
                                       f"opens it migrates it to {CURRENT} (the checks that read state were skipped)",
                     "run any agentkit command that reads state (agentkit task list), then agentkit doctor again")
    conn.row_factory = sqlite3.Row
    repo.__dict__["store"] = Store(repo.paths, conn)  # the Repo's cached store, read-only
    return check("state_db", OK, f"state database {db} at schema version {version}")


def _redis_server(repo) -> dict:
    from agentkit import redis
    from agentkit.errors import AgentkitError

    try:
        found = redis.binary()
    except AgentkitError as exc:
        if not redis.is_managed(repo):
            return check("redis_server", OK, "no redis-server binary, none needed: redis.url names an external Redis")
        return check("redis_server", FAIL, exc.message, exc.hint)
    return check("redis_server", OK, f"redis-server found: {found}")


def _redis(repo, store_open: bool) -> dict:
    from agentkit import capacity, redis, worktrees
    from agentkit.errors import AgentkitError

    slots = worktrees.slots(repo.store.conn) if store_open else {}
    target = redis.url(repo)
    managed = redis.is_managed(repo)
    down = FAIL if slots else WARN  # worktrees' env files point at it; with none, the next `worktree new` starts it
    if target is None:
        return check("redis", WARN, "the managed Redis has not been started yet (`worktree new` starts it)",
                     "agentkit redis start")
    shown = redis.redacted(target)
    if managed and redis.managed_pid(repo) is None:
        return check("redis", down, f"the managed redis-server ({shown}) is not running"
                     + (f"; {len(slots)} worktree(s) use it" if slots else ""), "agentkit redis start")
    try:  # a live pid is not an answer: a stopped (SIGSTOP) or wedged server only shows on a command
        redis.command(target, "PING", repo=repo, timeout=1.0, connect_timeout=1.0, why="agentkit doctor asks")
    except AgentkitError as exc:
        fix = ("agentkit redis stop && agentkit redis start (see .agents/redis/redis.log)" if managed
               else "start that Redis, or point redis.url at one that runs (agentkit config show)")
        return check("redis", down, f"Redis at {shown} does not answer PING within 1 s: {exc.message}", fix)
    live = redis.live_databases(repo, target)
    if not store_open:
        return check("redis", OK, f"Redis at {shown} answers, databases {live}")
    band = capacity.status(repo, live=False)
    past = sorted(db for db in slots if db >= live)
    if past:
        names = ", ".join(f"{slots[db]} (db {db})" for db in past)
        return check("redis", FAIL, f"Redis at {shown} has databases {live}, but worktree(s) {names} hold DBs past "
                                    "it", f"agentkit scale --provision --target {band['physical_max']} --yes")
    if live < band["physical_max"]:
        return check("redis", WARN, f"Redis at {shown} has databases {live}, fewer than the {band['physical_max']} "
                                    "the band was last sized for",
                     f"agentkit scale --provision --target {band['physical_max']} --yes")
    if band["free"] == 0 and band["current"] >= band["ceiling"]:
        return check("redis", WARN, f"the band is full at its ceiling ({band['used']} of {band['ceiling']} slots "
                                    f"under databases {live}): the next `worktree new` exits 3",
                     f"agentkit worktree cleanup --yes, or agentkit scale --provision --target {live * 2} --yes")
    return check("redis", OK, f"Redis at {shown} answers, databases {live}; band {band['used']}/{band['current']} "
                              f"slots used (ceiling {band['ceiling']})")


def _held(path: Path) -> bool:
    """Is the flock on `path` taken? A shared, non-blocking try on a read-only descriptor: nothing is written."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of the shared lock, if taken


def _locks(repo) -> dict:
    """A flock dies with its process, so a lock file naming a dead pid is normal (its last holder finished).
    Stale is a lock still taken while the pid it names is dead (a child that inherited the descriptor holds
    it), or one a live process has held past `locks.timeout` (every waiter times out)."""
    from agentkit.state.locks import holder

    folder = repo.paths.agents / "locks"
    files = sorted(folder.glob("*.lock")) if folder.is_dir() else []
    stale, slow = [], []
    for path in files:
        if not _held(path):
            continue
        recorded = holder(repo.paths.agents, path.stem)
        pid = int(recorded) if recorded and recorded.isdigit() else None
        if pid is None or not procs.exists(pid):
            stale.append(f"{path} (taken, but its recorded holder pid {recorded or '?'} is dead)")
        elif time.time() - path.stat().st_mtime > repo.config["locks.timeout"]:
            slow.append(f"{path} (held by pid {pid} for {time.time() - path.stat().st_mtime:.0f}s)")
    if stale:
        return check("locks", FAIL, "stale lock(s): " + "; ".join(stale),
                     f"find who holds it: fuser -v {folder}/*.lock (or lsof), and end that process")
    if slow:
        return check("locks", WARN, "lock(s) held past locks.timeout, so every waiter times out: " + "; ".join(slow),
                     "look at the holder (ps -p PID -o args): wait for it, or end it if it hangs")
    return check("locks", OK, f"{len(files)} lock file(s), none stale")


def _worktrees(repo) -> dict:
    from agentkit import worktrees

    rows = [w for w in worktrees.list_all(repo) if w["status"] != "unmanaged"]
    missing = [w for w in rows if w["status"] == "missing"]
    incomplete = [w for w in rows if w["status"] == "incomplete"]
    if missing:
        gone = "; ".join(f"{w['slug']} ({w['path']}: " + ("folder gone" if not Path(w["path"]).is_dir()
                                                           else "git no longer lists it") + ")" for w in missing)
        slug = missing[0]["slug"]
        return check("worktrees", FAIL, f"worktree(s) whose folder vanished, still holding a Redis slot: {gone}",
                     f"agentkit worktree up {slug} (make it whole again) or agentkit worktree remove {slug} "
                     "(free its slot); agentkit worktree cleanup --yes does every one")
    if incomplete:
        slugs = ", ".join(w["slug"] for w in incomplete)
        return check("worktrees", WARN, f"worktree(s) left half-made or half-removed by a killed command: {slugs}",
                     f"agentkit worktree up {incomplete[0]['slug']}, or agentkit worktree cleanup --yes")
    return check("worktrees", OK, f"{len(rows)} managed worktree(s), every folder present")


def _jobs(repo) -> dict:
    from agentkit import jobs

    found = jobs.executors(repo)
    lost, ended, unknown = [], [], set()
    running = jobs.list_jobs(repo, "running")
    for job in running:
        runner = found.get(job["executor"])
        if runner is None:
            unknown.add(job["executor"])
            continue
        report = runner.poll(repo, job) or {}  # executors only look: `refresh` is what records
        if report.get("state") == "lost":
            lost.append(f"job {job['job_id']} ({job['name']}): {report.get('reason') or 'its runner is gone'}")
        elif report.get("state") not in (None, "running"):
            ended.append(f"job {job['job_id']} ({job['name']}) ended {report['state']}")
    if lost:
        return check("jobs", FAIL, "job(s) whose supervisor died, still counted as running: " + "; ".join(lost),
                     "agentkit reap")
    health = jobs.health(repo)
    waiting = health["oldest_queued_wait_s"] or 0
    if ended or (health["queued"] and not health["busy"] and waiting > 30):
        what = ended + ([f"{health['queued']} queued job(s) waiting {waiting:.0f}s with free slots"]
                        if health["queued"] and not health["busy"] and waiting > 30 else [])
        return check("jobs", WARN, "not recorded yet: " + "; ".join(what), "agentkit reap")
    if unknown:
        return check("jobs", WARN, f"running jobs of executor(s) not loaded here: {', '.join(sorted(unknown))}",
                     "load that executor's plugin (agentkit plugins) to check them")
    return check("jobs", OK, f"{len(running)} running, {health['queued']} queued; every runner alive")


def _claims(repo) -> dict:
    from agentkit import claims

    now = time.time()
    expired = [c for c in claims.holders(repo.store.conn).values() if c["lease_expires_at"] < now]
    if expired:
        listed = "; ".join(f"{c['claim_id']} (task {c['task_id']}, agent {c['agent']}, lease ended "
                           f"{now - c['lease_expires_at']:.0f}s ago)" for c in expired)
        return check("claims", WARN, f"claim(s) past their lease, their tasks still held: {listed}",
                     "agentkit reap (the tasks go back to the pool; the next `claim` also does it)")
    return check("claims", OK, "no claim past its lease")


def _agents_md(repo, start: Path | None) -> dict:
    from agentkit import docs

    found = docs.install_in(repo, start, check=True)  # what `agentkit install-docs --check` would say here
    if found["changed"]:
        what = "is out of date" if Path(found["path"]).exists() else "does not exist"
        return check("agents_md", WARN, f"{found['path']} {what}: coding agents read agentkit's section there",
                     "agentkit install-docs")
    return check("agents_md", OK, f"{found['path']} is current")


# ---- git hooks ----------------------------------------------------------------------------------------

def _hooks(repo) -> dict:
    from agentkit import hooks

    rows = {h["name"]: h for h in hooks.status(repo)["hooks"]}
    missing = [n for n in hooks.DEFAULT if rows[n]["owner"] != "agentkit"]
    stale = [n for n, h in rows.items() if h["owner"] == "agentkit" and not h["current"]]
    if missing:
        return check("hooks", WARN, f"agentkit's git hooks are not installed: {', '.join(missing)} (a merge that "
                     "changes docs/ leaves AGENTS.md stale; a plain `git worktree add` gets no Redis DB)",
                     "agentkit hooks install")
    if stale:
        return check("hooks", WARN, f"agentkit's git hooks are older than this agentkit: {', '.join(stale)}",
                     "agentkit hooks install")
    ours = ", ".join(n for n, h in rows.items() if h["owner"] == "agentkit")
    return check("hooks", OK, f"agentkit's git hooks are installed ({ours})")
