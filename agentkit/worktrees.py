"""Agent worktrees: a git worktree, a Redis slot, a port block and an env file per slug."""

import os
import re
import time
from pathlib import Path

from agentkit import band, events, failpoints, git, procs, redis
from agentkit.errors import FAILURES, AgentkitError, ExitCode, conflict, not_found, usage
from agentkit.state.files import atomic_write

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SCHEMA_VERSION = 1


def no_hooks_env() -> dict:
    """The environment for agentkit's own checkouts: agentkit's git hooks skip their part (a chained hook still
    runs), since the command at work writes the worktree's row itself."""
    return {**os.environ, "AGENTKIT_NO_HOOKS": "1"}


def validate_slug(slug: str) -> str:
    if not SLUG_RE.fullmatch(slug) or ".." in slug or slug.endswith((".lock", ".")):
        raise usage(f"invalid slug {slug!r}: use 1-63 lowercase letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit", "for example: agentkit worktree new feat-login")
    return slug


def root_dir(repo) -> Path:
    raw = repo.config["worktrees.root"].format(repo=repo.root.name)
    return (repo.root / raw).resolve()


def _branch(repo, slug: str, branch: str | None) -> str:
    name = branch or f"{repo.config['worktrees.branch_prefix']}{slug}"
    if not git.valid_branch_name(name, repo.root):
        raise usage(f"invalid branch name {name!r}", "pass --branch with a valid git branch name")
    return name


def find(repo, slug: str) -> dict | None:
    """A worktree's stored row, or None."""
    rows = repo.store.rows("SELECT * FROM worktrees WHERE slug = ?", (slug,))
    return rows[0] if rows else None


def get(repo, slug: str) -> dict:
    """A worktree's stored row; exit 6 if agentkit does not manage it."""
    row = find(repo, validate_slug(slug))
    if row is None:
        raise not_found(f"unknown worktree {slug!r}", f"create it with `agentkit worktree new {slug}`")
    return row


def slots(conn) -> dict[int, str]:
    """The Redis slots worktrees hold: {redis_db: slug} (the band's `used`)."""
    return {r[0]: r[1] for r in conn.execute("SELECT redis_db, slug FROM worktrees WHERE redis_db IS NOT NULL")}


def _write_mirror(repo) -> None:
    band.write_mirror(repo, slots)


def env_of(repo, slug: str) -> dict[str, str]:
    """The NAME=value pairs of a worktree's env file ({} if it has none)."""
    row = find(repo, slug)
    path = Path(row["env_file"]) if row and row["env_file"] else None
    if path is None or not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key] = value
    return out


def has_new_commits(repo, row: dict) -> bool:
    """Does the worktree's branch have commits past the one it was made from?"""
    head = git.rev(row["branch"], repo.root)
    return bool(head) and head != row["base_commit"]


def _ports(repo, slug: str, db: int) -> dict:
    return repo.hook.port_block(slug=slug, redis_db=db, config=repo.config)


def describe(repo, row: dict, base_url: str | None, status: str) -> dict:
    db = row.get("redis_db")
    ports = list(range(row["port_base"], row["port_base"] + row["port_count"])) if row.get("port_base") else []
    return {"slug": row["slug"], "path": row["path"], "branch": row["branch"], "redis_db": db,
            "redis_url": redis.url_for_db(base_url, db) if base_url and db is not None else None,
            "ports": ports, "env_file": row.get("env_file"), "status": status}


def write_env(repo, slug: str, extra: dict) -> dict:
    """Rewrite a worktree's env file with `extra` pairs after agentkit's own (`agentkit run` adds the agent's task,
    claim and fence); `up` writes it again without them."""
    row = get(repo, slug)
    wt = describe(repo, row, redis.url(repo), "active")
    _write_env(repo, wt, extra)
    return wt


def _write_env(repo, wt: dict, extra: dict | None = None) -> None:
    env = {"AGENTKIT_SLUG": wt["slug"], "AGENTKIT_WORKTREE": wt["path"], "AGENTKIT_BRANCH": wt["branch"],
           "REDIS_URL": wt["redis_url"], "REDIS_DB": str(wt["redis_db"])}
    if wt["ports"]:
        env.update(PORT=str(wt["ports"][0]), PORT_BASE=str(wt["ports"][0]),
                   PORT_RANGE=f"{wt['ports'][0]}-{wt['ports'][-1]}")
    for answer in reversed(repo.hook.worktree_env(worktree=wt, config=repo.config)):  # the first answer wins
        env.update({k: str(v) for k, v in (answer or {}).items()})
    env.update({k: str(v) for k, v in (extra or {}).items()})
    lines = [f"# written by agentkit for worktree {wt['slug']}; `agentkit worktree up {wt['slug']}` rewrites it"]
    lines += [f"{k}={v}" for k, v in env.items()]
    atomic_write(Path(wt["env_file"]), "\n".join(lines) + "\n", mode=0o600)  # REDIS_URL may carry a password


def _leftover_temps(file: Path) -> list[Path]:
    """Temp files that a write of `file` killed midway left beside it (atomic_write's `.<name>.XXXX.tmp`)."""
    return sorted(file.parent.glob(f".{file.name}.*.tmp")) if file.parent.is_dir() else []


def _env_temps(repo, path: Path) -> list[Path]:
    return _leftover_temps(path / repo.config["worktrees.env_file"])


def rewrite_env_files(repo, base_url: str) -> list[str]:
    """Point the env file of every active worktree at `base_url` (after the managed Redis moved port); the slugs
    whose file was rewritten."""
    done = []
    for row in repo.store.rows("SELECT * FROM worktrees WHERE status = 'active' AND redis_db IS NOT NULL "
                               "ORDER BY slug"):
        if Path(row["path"]).is_dir():
            _write_env(repo, describe(repo, row, base_url, "active"))
            done.append(row["slug"])
    return done


def _exclude_env_file(repo) -> None:
    exclude(repo, repo.config["worktrees.env_file"])


def exclude(repo, name: str) -> None:
    """Keep a file agentkit writes into worktrees (the env file, an agent's prompt) out of `git status` in every
    worktree (info/exclude is shared by all of them)."""
    pattern = "/" + name
    exclude = repo.paths.git_common_dir / "info" / "exclude"
    text = exclude.read_text() if exclude.exists() else ""
    if pattern not in text.splitlines():
        with repo.lock("git"):  # every writer of info/exclude holds it: a temp file found now is a dead one's
            for temp in _leftover_temps(exclude):
                temp.unlink(missing_ok=True)
            text = exclude.read_text() if exclude.exists() else ""
            if pattern not in text.splitlines():
                atomic_write(exclude, text + ("" if text.endswith("\n") or not text else "\n") + pattern + "\n")


def _creator_alive(row: dict) -> bool:
    return procs.alive(row.get("creator_pid"), row.get("creator_started"))


def _busy(row: dict, hint: str) -> AgentkitError:
    doing = {"creating": "created", "removing": "removed"}[row["status"]]
    return conflict(f"worktree {row['slug']} is being {doing} by pid {row['creator_pid']}", hint)


def _warning(ready: dict) -> dict:
    return {"warning": ready["warning"]} if ready["warning"] else {}


def _allocate_row(repo, slug: str, path: Path, branch: str, base_commit: str | None,
                  physical: int, status: str) -> tuple[dict, dict | None]:
    """Insert or complete a worktree's row with a fresh slot and port block, in one transaction."""
    now = time.time()
    with repo.store.tx() as conn:
        existing = conn.execute("SELECT * FROM worktrees WHERE slug = ?", (slug,)).fetchone()
        if existing is not None and Path(existing["path"]).resolve() != Path(path).resolve():
            raise conflict(f"worktree {slug} is being made at {existing['path']}, not {path}",
                           "rerun: the slug is taken, the next try picks another")  # e.g. adopt racing new
        if existing is not None and existing["redis_db"] is not None:
            return dict(existing), None
        db, change = band.allocate(repo, conn, physical, slug, slots(conn))
        ports = _ports(repo, slug, db)
        if ports["base"] < 1 or ports["base"] + ports["count"] > 65536:
            raise usage(f"the port block for redis db {db} ({ports['base']}+{ports['count']}) is outside 1-65535",
                        "lower ports.base or ports.block in .agents/config.toml")
        row = {"slug": slug, "path": str(path), "branch": branch, "base_commit": base_commit, "redis_db": db,
               "port_base": ports["base"], "port_count": ports["count"],
               "env_file": str(path / repo.config["worktrees.env_file"]), "status": status,
               "creator_pid": os.getpid(), "creator_started": procs.start_time(os.getpid()),
               "created_at": existing["created_at"] if existing else now, "updated_at": now}
        conn.execute("INSERT OR REPLACE INTO worktrees ({}) VALUES ({})".format(
            ", ".join(row), ", ".join("?" * len(row))), tuple(row.values()))
        events.record(conn, "worktree.allocated", slug, redis_db=db, ports=ports)
    return row, change


def _flush(repo, row: dict, base_url: str) -> None:
    """Empty the worktree's Redis DB, so a reused slot never carries another agent's keys."""
    with repo.lock("flush"):
        redis.flush(base_url, row["redis_db"], repo=repo)


def _finish(repo, row: dict, base_url: str, kind: str) -> dict:
    """Write the env file and mark the (flushed) worktree active."""
    wt = describe(repo, row, base_url, "active")
    _exclude_env_file(repo)
    _write_env(repo, wt)
    with repo.store.tx() as conn:
        conn.execute("UPDATE worktrees SET status = 'active', creator_pid = NULL, updated_at = ? WHERE slug = ?",
                     (time.time(), row["slug"]))
        events.record(conn, kind, row["slug"], path=row["path"], redis_db=row["redis_db"])
    return wt


def _git_add(repo, slug: str | None, path: Path, branch: str, base_commit: str, meanwhile=None) -> None:
    """`git worktree add` under the git lock, with `meanwhile` run while git checks out (their times overlap
    instead of adding up). When git is to make the branch, the worktree's row (if any) records that before git
    runs, so no crash can lose whose branch it is (undo and remove delete it only if nothing is on it)."""
    with repo.lock("git"):
        git.run(["worktree", "prune"], repo.root)
        create = not git.branch_exists(branch, repo.root)
        if create and slug is not None:
            with repo.store.tx() as conn:
                conn.execute("UPDATE worktrees SET branch_created = 1 WHERE slug = ?", (slug,))
        failpoints.reach("worktree-add:branch-recorded")
        # --quiet: a git whose agentkit was killed then writes nothing to the dead pipe, so it finishes its
        # checkout instead of dying of SIGPIPE half-way; repairs wait for it (_wait_for_git)
        adding = git.start(["worktree", "add", "--quiet", *(["-b", branch, str(path), base_commit] if create
                                                            else [str(path), branch])], repo.root,
                           env=no_hooks_env())
        failpoints.reach("worktree-add:checking-out")
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            git.wait(adding)


def _wait_for_git(repo, path: Path) -> None:
    """Wait for a git command still working on `path`: one whose agentkit was killed runs on (a `worktree add`
    checking out, a `worktree remove` deleting), and a repair must not race it."""
    import psutil

    mine = str(path)
    # named on its command line (`worktree add PATH`), or at work inside it: the `git reset --hard` that
    # `worktree add` runs in the new folder names no path, and outlives a killed parent
    working = [p for p in psutil.process_iter(["name", "cmdline", "cwd"])
               if (p.info["name"] or "").startswith("git") and (
                   mine in (p.info["cmdline"] or ()) or (p.info["cwd"] or "") == mine
                   or (p.info["cwd"] or "").startswith(mine + os.sep))]
    timeout = repo.config["locks.timeout"]
    _gone, left = psutil.wait_procs(working, timeout=timeout) if working else ([], [])
    if left:
        raise AgentkitError(f"git (pid {left[0].pid}) has been working on {path} for more than {timeout}s",
                            f"wait for it to finish (or stop it: kill {left[0].pid}), then rerun",
                            ExitCode.LOCK_TIMEOUT)


def _whole_checkout(repo, path: Path, branch: str) -> bool:
    """Did `git worktree add` finish this checkout? git keeps a worktree locked "initializing" until it has; a
    killed add can also leave HEAD all zeros, or an index short of files (`git status` shows them deleted), and
    a killed git an index.lock. Call once no git works on it (_wait_for_git)."""
    known = _git_worktree(repo, str(path))
    if known is None or not path.is_dir() or known.get("lock_reason") == "initializing" or git.stale_locks(path):
        return False
    if not (known["head"] or "").strip("0") or known.get("branch") != branch:
        return False
    try:
        return not git.dirty(path)
    except AgentkitError:
        return False


def _discard_checkout(repo, path: Path, folder_is_ours: bool) -> None:
    """Take away a checkout nobody can be using (of a failed or killed `new`, or a killed `remove`): git's entry,
    unlocking the lock git itself leaves on a half-made one ("initializing"; a lock you set is refused, exit 7).
    With `folder_is_ours`, what git cannot remove (a removal killed midway takes the folder's .git file first)
    is deleted and pruned. Hold the git lock."""
    _wait_for_git(repo, path)
    known = _git_worktree(repo, str(path))
    if known is not None:
        if known.get("locked") and known.get("lock_reason") != "initializing":
            raise conflict(f"{path} is locked ({known.get('lock_reason') or 'no reason given'})",
                           f"unlock it with `git worktree unlock {path}` and rerun")
        if known.get("locked"):
            git.run(["worktree", "unlock", str(path)], repo.root)
        git.remove_worktree(path, repo.root, force=True, check=not folder_is_ours)
    if folder_is_ours and path.exists():
        import shutil

        shutil.rmtree(path)
    git.run(["worktree", "prune"], repo.root, check=False)


def _branch_disposable(repo, row: dict, head: str | None = None) -> bool:
    """May the row's branch go with it? Only if agentkit made it and nothing on it would be lost. `head`: its
    tip when the caller has read it already."""
    head = head or git.rev(row["branch"], repo.root)
    return bool(row.get("branch_created")) and bool(head) and (
        head == row["base_commit"] or git.is_ancestor(head, "HEAD", repo.root))


def _drop_row(repo, slug: str, kind: str, **data) -> dict | None:
    with repo.store.tx() as conn:
        conn.execute("DELETE FROM worktrees WHERE slug = ?", (slug,))
        change = band.shrink_after_release(repo, conn, slug, slots(conn))
        events.record(conn, kind, slug, **data)
    return change


def _preflight(repo, slug: str, base: str | None, branch: str | None) -> dict:
    """What `new` checks before it changes anything: the slug, branch, folder and base ref; the problems found
    (each with the exit code `new` gives for it), so `plan` can list them all and `new` stops at the first."""
    validate_slug(slug)
    branch = _branch(repo, slug, branch)
    path = root_dir(repo) / slug
    problems: list[AgentkitError] = []
    if find(repo, slug):
        problems.append(conflict(f"worktree {slug} already exists",
                                 f"use `agentkit worktree up {slug}` to bring it up"))
    if path.exists():
        problems.append(conflict(f"{path} already exists", "choose another slug or remove that folder"))
    base_commit = git.rev(base or "HEAD", repo.root)
    if not base_commit and base is None:  # HEAD names no commit: an empty (or bare, empty) repository
        problems.append(usage("this repository has no commits yet: HEAD names no commit",
                              "make a first commit (git commit --allow-empty -m 'first commit'), or pass --base"))
    elif not base_commit:
        problems.append(usage(f"unknown base ref {base!r}", "pass --base with a branch, tag or commit"))
    return {"branch": branch, "path": path, "base_commit": base_commit, "problems": problems}


def plan(repo, slug: str, base: str | None = None, branch: str | None = None) -> dict:
    """What `new` would do, changing nothing."""
    pre = _preflight(repo, slug, base, branch)
    problems = pre["problems"]
    conn = repo.store.conn
    preview = band.load(conn, repo.config, slots(conn), redis.databases_if_up(repo))
    db = preview.first_free()
    grows = db is None
    if grows:
        band.preview_growth(repo, preview)
        db = preview.first_free()
        if db is None:
            problems.append(band.full_error(preview))
    return {"schema_version": SCHEMA_VERSION, "slug": slug, "path": str(pre["path"]), "branch": pre["branch"],
            "branch_exists": git.branch_exists(pre["branch"], repo.root), "redis_db": db, "band_grows": grows,
            "band": preview.summary(), "ok": not problems, "problems": [p.message for p in problems],
            "exit_code": int(problems[0].code) if problems else 0}


def new(repo, slug: str, base: str | None = None, branch: str | None = None) -> dict:
    pre = _preflight(repo, slug, base, branch)
    if pre["problems"]:
        raise pre["problems"][0]
    branch, path, base_commit = pre["branch"], pre["path"], pre["base_commit"]
    ready = redis.ensure_running(repo)
    base_url = ready["url"]
    row, change = _allocate_row(repo, slug, path, branch, base_commit, ready["databases"], "creating")
    if row.get("creator_pid") != os.getpid():
        raise conflict(f"worktree {slug} already exists", f"use `agentkit worktree up {slug}` to bring it up")
    failpoints.reach("worktree-new:allocated")
    try:  # all or nothing: whatever fails from here on, _undo_new takes back what was made
        # the slot is this row's already, so it is flushed (mostly: the Redis client imported) during the checkout
        _git_add(repo, slug, path, branch, base_commit, meanwhile=lambda: _flush(repo, row, base_url))
        failpoints.reach("worktree-new:added")
        _write_mirror(repo)
        wt = _finish(repo, row, base_url, "worktree.created")
    except BaseException as exc:
        _undo_new(repo, slug, path, exc)
        raise
    return {"schema_version": SCHEMA_VERSION, **wt, "band_change": change, **_warning(ready)}


def _undo_new(repo, slug: str, path: Path, exc: BaseException) -> None:
    """Take back a failed `new`: the checkout, the branch if agentkit made it and nothing is on it (one you
    brought never goes), the row. If even that fails, the row stays (`incomplete` once this process is gone)
    for `up` or `cleanup`, and the error's hint says so."""
    import contextlib

    try:
        row = find(repo, slug) or {}
        drop_branch = bool(row) and _branch_disposable(repo, row)
        if path.exists() or drop_branch:  # git got that far (a git lock that timed out would time out again)
            with repo.lock("git"):
                _discard_checkout(repo, path, folder_is_ours=False)  # a folder git does not know is not ours
                if drop_branch:
                    git.run(["branch", "-D", row["branch"]], repo.root)
        _drop_row(repo, slug, "worktree.rolled_back", error=getattr(exc, "message", str(exc)))
    except Exception:  # noqa: BLE001 - `exc` is the failure to report; what is left is for cleanup
        if isinstance(exc, FAILURES):
            exc.hint = (f"{exc.hint}; " if exc.hint else "") + (
                f"taking {slug} back failed too: `agentkit worktree cleanup --yes` removes what is left")
        return
    with contextlib.suppress(OSError):  # the capacity mirror is advisory; the next command rewrites it
        _write_mirror(repo)


def _git_worktree(repo, path: str) -> dict | None:
    resolved = str(Path(path).resolve())
    return next((w for w in git.worktrees(repo.root) if str(Path(w["path"]).resolve()) == resolved), None)


def up(repo, slug: str) -> dict:
    """Make sure a worktree exists with its allocation and env file; adopt one git knows but agentkit does not."""
    validate_slug(slug)
    row = find(repo, slug)
    if row is None:
        prefix = repo.config["worktrees.branch_prefix"]
        known = next((w for w in git.worktrees(repo.root)[1:]
                      if Path(w["path"]).name == slug or w.get("branch") == f"{prefix}{slug}"), None)
        if known is None:
            raise not_found(f"unknown worktree {slug!r}", f"create it with `agentkit worktree new {slug}`")
        path, branch, base_commit = Path(known["path"]), known.get("branch") or f"{prefix}{slug}", known["head"]
    else:
        if row["status"] != "active" and _creator_alive(row):
            raise _busy(row, "wait for that command to finish")
        path, branch, base_commit = Path(row["path"]), row["branch"], row["base_commit"]
    return _bring_up(repo, slug, row, path, branch, base_commit, "worktree.up")


def _bring_up(repo, slug: str, row: dict | None, path: Path, branch: str, base_commit: str | None,
              kind: str) -> dict:
    """`up`'s repair, shared with `adopt`: the checkout, the allocation (the one `new` makes) and the env file."""
    ready = redis.ensure_running(repo)
    base_url = ready["url"]
    repaired = []
    for temp in _env_temps(repo, path):
        temp.unlink(missing_ok=True)
    if row is not None and row["status"] != "active":  # a `new` or `remove` died midway: redo a half checkout
        with repo.lock("git"):
            _wait_for_git(repo, path)
            if not _whole_checkout(repo, path, branch):
                _discard_checkout(repo, path, folder_is_ours=True)
    if _git_worktree(repo, str(path)) is None or not path.is_dir():
        if path.exists():
            raise conflict(f"{path} exists but is not a git worktree of this repo",
                           "move that folder away and rerun `agentkit worktree up`")
        _git_add(repo, slug if row is not None else None, path, branch, base_commit or git.rev("HEAD", repo.root))
        repaired.append("worktree")
    change = None
    if row is None or row["redis_db"] is None or row["status"] != "active":
        if row is None or row["redis_db"] is None:
            row, change = _allocate_row(repo, slug, path, branch, base_commit, ready["databases"], "creating")
            repaired.append("allocation")
        _flush(repo, row, base_url)
        wt = _finish(repo, row, base_url, kind)
        repaired.append("env_file")
    else:
        wt = describe(repo, row, base_url, "active")
        if not Path(wt["env_file"]).is_file():
            repaired.append("env_file")
        _write_env(repo, wt)
        with repo.store.tx() as conn:
            events.record(conn, "worktree.up", slug)
    _write_mirror(repo)
    repo.hook.worktree_up(worktree=wt, config=repo.config)
    return {"schema_version": SCHEMA_VERSION, **wt, "repaired": repaired, "band_change": change, **_warning(ready)}


def _slug_for(repo, path: Path) -> str:
    """A free slug for a worktree folder agentkit did not name: the folder's name made valid (lowercase; other
    characters become '-'), with -2, -3, ... when another worktree has it."""
    stem = re.sub(r"\.{2,}", ".", re.sub(r"[^a-z0-9._-]+", "-", path.name.lower()))
    stem = stem.strip("-._")[:56].removesuffix(".lock").rstrip("-._") or "worktree"
    taken = {r["slug"] for r in repo.store.rows("SELECT slug FROM worktrees")}
    return next(s for s in (stem, *(f"{stem}-{n}" for n in range(2, 10_000))) if s not in taken)


def adopt(repo, path: Path | str) -> dict:
    """Bring a linked worktree agentkit never made (plain `git worktree add`, another tool; a folder anywhere, on
    the branch git has there) under agentkit: a Redis DB (flushed), a port block and an env file, as `new` gives.
    Its slug is the folder's name (made valid, made unique). Idempotent: a worktree agentkit already has is left
    as it is (`adopted` is false; `up SLUG` repairs one)."""
    resolved = Path(path).resolve()
    known = _git_worktree(repo, str(resolved))
    if known is None:
        raise not_found(f"{resolved} is not a worktree of this repository",
                        "see `git worktree list`, or make one with `agentkit worktree new SLUG`")
    if resolved == repo.root.resolve() or known.get("bare"):
        raise usage(f"{resolved} is the main checkout, not a linked worktree",
                    "adopt a worktree made with `git worktree add`")
    if not known.get("branch"):
        raise usage(f"{resolved} has a detached HEAD: an agentkit worktree is on a branch",
                    f"check out a branch there (git -C {resolved} switch -c NAME), then rerun")
    with repo.lock("adopt"):  # two adopts at once (hooks of two `git worktree add`) must not pick one slug
        row = next((r for r in repo.store.rows("SELECT * FROM worktrees")
                    if Path(r["path"]).resolve() == resolved), None)
        if row is not None:
            status = row["status"] if row["status"] == "active" or _creator_alive(row) else "incomplete"
            return {"schema_version": SCHEMA_VERSION, **describe(repo, row, redis.url(repo), status),
                    "adopted": False, "repaired": [], "band_change": None}
        data = _bring_up(repo, validate_slug(_slug_for(repo, resolved)), None, resolved, known["branch"],
                         known["head"], "worktree.adopted")
    return {**data, "adopted": True}


def list_all(repo) -> list[dict]:
    """Every worktree agentkit manages, with its status, then those git knows but agentkit does not."""
    rows = repo.store.rows("SELECT * FROM worktrees ORDER BY created_at, slug")
    commands = [git.WORKTREE_LIST]
    if rows:  # branch facts matter only for worktrees agentkit manages
        commands += [["for-each-ref", "--merged", "HEAD", "--format=%(refname:short)", "refs/heads"],
                     ["for-each-ref", "--format=%(refname:short) %(committerdate:unix)", "refs/heads"]]
    listing, *branch_facts = git.out_many(commands, repo.root)
    known = git.worktrees(repo.root, listing)
    by_path = {str(Path(w["path"]).resolve()): w for w in known}
    merged, ages = set(), {}
    if branch_facts:
        merged = set(branch_facts[0].splitlines())
        for line in branch_facts[1].splitlines():
            name, _, ts = line.rpartition(" ")
            ages[name] = float(ts or 0)
    stale_after = repo.config["worktrees.stale_days"] * 86400
    base_url = redis.url(repo)
    out = []
    for row in rows:
        wt_git = by_path.pop(str(Path(row["path"]).resolve()), None)
        if row["status"] != "active":  # creating or removing: its command runs, or it died midway
            status = row["status"] if _creator_alive(row) else "incomplete"
        elif wt_git is None or not Path(row["path"]).is_dir():
            status = "missing"
        elif row["branch"] in merged and wt_git.get("head") != row["base_commit"]:
            status = "merged"
        elif stale_after and time.time() - max(ages.get(row["branch"], 0), row["updated_at"]) > stale_after:
            status = "stale"
        else:
            status = "active"
        item = describe(repo, row, base_url, status)
        item["last_activity"] = max(ages.get(row["branch"], 0), row["updated_at"])
        out.append(item)
    for w in known[1:]:
        if str(Path(w["path"]).resolve()) in by_path and not w.get("bare"):
            out.append({"slug": Path(w["path"]).name, "path": w["path"], "branch": w.get("branch"),
                        "redis_db": None, "redis_url": None, "ports": [], "env_file": None,
                        "status": "unmanaged", "last_activity": None})
    return out


def remove(repo, slug: str, force: bool = False, dry_run: bool = False, released_by: str | None = None) -> dict:
    """Flush the slot, release slot and ports, remove the worktree; refuse uncommitted work unless forced.

    Refused while the worktree_users hook names a user of it, except `released_by` (a job removing its own).
    An `incomplete` worktree (its `new` or `remove` died midway) holds nobody's work: its checkout goes as is."""
    validate_slug(slug)
    row = find(repo, slug)
    if row is None:
        raise not_found(f"unknown worktree {slug!r}",
                        "see `agentkit worktree list`; a worktree shown as unmanaged can be adopted with `up`")
    if row["status"] != "active" and _creator_alive(row):
        raise _busy(row, "wait for that command to finish, then remove it")
    incomplete = row["status"] != "active"
    users = [u for answer in repo.hook.worktree_users(repo=repo, worktree=row, released_by=released_by)
             for u in answer or ()]
    if users and not force:
        raise conflict(f"worktree {slug} is in use by {', '.join(users)}",
                       "wait for them to finish (`agentkit jobs wait ID`) or stop them first, or pass --force")
    path = Path(row["path"])
    in_git = _git_worktree(repo, row["path"]) is not None and path.is_dir()
    temps = _env_temps(repo, path)
    leftovers = {str(t.relative_to(path)) for t in temps}
    changes = [c for c in git.dirty(path) if c[3:] not in leftovers] if in_git and not incomplete else []
    if changes and not force:
        raise conflict(f"worktree {slug} has uncommitted changes: {'; '.join(changes[:5])}"
                       + (f" (+{len(changes) - 5} more)" if len(changes) > 5 else ""),
                       "commit or stash them, or rerun with --force to discard them")
    steps = {"schema_version": SCHEMA_VERSION, "slug": slug, "path": str(path), "branch": row["branch"],
             "redis_db": row["redis_db"], "flush": row["redis_db"] is not None,
             "remove_worktree": in_git or (incomplete and path.exists()),
             "delete_branch": _branch_disposable(repo, row), "discard_changes": len(changes)}
    if dry_run:
        return {**steps, "dry_run": True}
    ready = {"url": None, "warning": None}
    if row["redis_db"] is not None:
        try:  # Redis must answer before anything is removed, so a refusal leaves all as it was
            ready = redis.ensure_running(repo, with_databases=False)
            redis.ping(ready["url"], repo=repo)
        except AgentkitError as exc:
            if not force:
                raise AgentkitError(exc.message, "start Redis and retry, or pass --force to remove without "
                                    "flushing (the next `new` flushes the slot before reuse)") from exc
            ready = {"url": None, "warning": ready["warning"]}
    for temp in temps:  # a killed env-file write's; `git worktree remove` would call it uncommitted work
        temp.unlink(missing_ok=True)
    _set_status(repo, slug, "removing")  # from here a crash leaves it `incomplete`, for cleanup to finish
    failpoints.reach("worktree-remove:marked")
    try:
        repo.hook.worktree_removed(worktree=describe(repo, row, redis.url(repo), row["status"]), config=repo.config)
        with repo.lock("git"):
            if incomplete:
                _discard_checkout(repo, path, folder_is_ours=True)
                # asked again: a git its killed command left running may have made the branch only now
                steps["delete_branch"] = _branch_disposable(repo, row)
            elif in_git:
                git.remove_worktree(path, repo.root, force=force)
            git.run(["worktree", "prune"], repo.root, check=False)
            if steps["delete_branch"]:
                git.run(["branch", "-D", row["branch"]], repo.root, check=False)
    except FAILURES:
        if not incomplete:  # refused before anything went (a worktree you locked, a hook): it stays as it was
            _set_status(repo, slug, row["status"])
        raise
    failpoints.reach("worktree-remove:removed")
    flushed = False
    if ready["url"] is not None:
        _flush(repo, row, ready["url"])
        flushed = True
    change = _drop_row(repo, slug, "worktree.removed", redis_db=row["redis_db"], flushed=flushed)
    _write_mirror(repo)
    return {**steps, "flushed": flushed, "band_change": change, **_warning(ready)}


def _set_status(repo, slug: str, status: str) -> None:
    """`removing` names this process as the one at work on the row (as `creating` does); `active` names none."""
    pid = os.getpid() if status != "active" else None
    with repo.store.tx() as conn:
        conn.execute("UPDATE worktrees SET status = ?, creator_pid = ?, creator_started = ?, updated_at = ? "
                     "WHERE slug = ?", (status, pid, pid and procs.start_time(pid), time.time(), slug))


def cleanup(repo, merged: bool = True, stale_days: int | None = None, dry_run: bool = False) -> dict:
    """Remove merged, missing and half-made worktrees (and stale ones if asked); never uncommitted work."""
    if stale_days is not None and stale_days < 1:
        raise usage(f"--stale {stale_days}: give a number of days of at least 1")
    removed, skipped = [], []
    now = time.time()
    for wt in list_all(repo):
        reasons = []
        if wt["status"] in ("missing", "incomplete"):
            reasons.append(wt["status"])
        if merged and wt["status"] == "merged":
            reasons.append("merged")
        if stale_days is not None and wt["last_activity"] and now - wt["last_activity"] > stale_days * 86400:
            reasons.append(f"no activity for {stale_days}+ days")
        if not reasons or wt["status"] in ("unmanaged", "creating", "removing"):
            continue
        try:
            result = remove(repo, wt["slug"], force=False, dry_run=dry_run)
            removed.append({**result, "reasons": reasons})
        except AgentkitError as exc:
            skipped.append({"slug": wt["slug"], "reasons": reasons, "skipped_because": exc.message})
    return {"schema_version": SCHEMA_VERSION, "dry_run": dry_run, "removed": removed, "skipped": skipped}


def reset(repo, slug: str, base: str) -> dict:
    """Start a worktree over at `base` (an agent's retry): its branch points there, its checkout is clean.
    Whatever it held that `base` lacks, commits or uncommitted changes, is kept first at
    refs/agentkit/saved/<slug>/<ts> (returned as `saved`)."""
    row = get(repo, slug)
    path = Path(row["path"])
    _commit_dirty(repo, path, "agentkit: uncommitted work saved before a reset")
    saved = _save_unmerged(slug, git.rev("HEAD", path), base, path)
    git.run(["reset", "--quiet", "--hard", base], path)
    git.run(["clean", "--quiet", "-fd"], path)
    with repo.store.tx() as conn:
        conn.execute("UPDATE worktrees SET base_commit = ?, updated_at = ? WHERE slug = ?", (base, time.time(), slug))
        events.record(conn, "worktree.reset", slug, base=base, saved=saved)
    return {"slug": slug, "path": str(path), "branch": row["branch"], "base": base, "saved": saved}


def recycle(repo, old_slug: str, slug: str, base: str) -> dict:
    """Turn a finished worktree (clean, its work merged or kept on its branch) into worktree `slug` at `base`:
    the folder moves, a new branch is checked out, the Redis slot and port block stay (the slot is flushed).
    Several git steps fewer than `remove` + `new`, for a run that goes through many tasks.

    Refused (exit 7) when the old worktree has uncommitted changes; a branch `slug` already has is kept at
    refs/agentkit/saved/<slug>/<ts> when `base` lacks its commits, then reset to `base`."""
    pre = _preflight(repo, slug, base, None)
    if pre["problems"]:
        raise pre["problems"][0]
    old = get(repo, old_slug)
    old_path, path, branch = Path(old["path"]), pre["path"], pre["branch"]
    if old["status"] != "active" or not old_path.is_dir():
        raise conflict(f"worktree {old_slug} is not an active checkout", "remove it and make a new one")
    if git.dirty(old_path):
        raise conflict(f"worktree {old_slug} has uncommitted changes", "commit or remove them first")
    ready = redis.ensure_running(repo)
    with repo.lock("git"):
        tips = git.branch_tips([branch, old["branch"]], repo.root)
        prior = tips.get(branch)
        saved = _save_unmerged(slug, prior, base, repo.root)
        git.run(["worktree", "move", str(old_path), str(path)], repo.root)
        moving = git.start(["checkout", "--quiet", "--force", "-B", branch, base], path, env=no_hooks_env())
        try:
            _flush(repo, old, ready["url"])
        finally:
            git.wait(moving)  # the old checkout was clean (no untracked files either): nothing to `git clean`
        if old["branch"] != branch and _branch_disposable(repo, old, tips.get(old["branch"])):
            git.run(["branch", "-D", old["branch"]], repo.root, check=False)
    now = time.time()
    with repo.store.tx() as conn:
        conn.execute("UPDATE worktrees SET slug = ?, path = ?, branch = ?, base_commit = ?, branch_created = ?, "
                     "env_file = ?, updated_at = ? WHERE slug = ?",
                     (slug, str(path), branch, base, int(prior is None), str(path / repo.config["worktrees.env_file"]),
                      now, old_slug))
        events.record(conn, "worktree.recycled", slug, was=old_slug, path=str(path), redis_db=old["redis_db"],
                      saved=saved)
        row = dict(conn.execute("SELECT * FROM worktrees WHERE slug = ?", (slug,)).fetchone())
    wt = describe(repo, row, ready["url"], "active")
    _write_env(repo, wt)
    _write_mirror(repo)
    return {"schema_version": SCHEMA_VERSION, **wt, "was": old_slug, "saved": saved}


def commit_all(repo, slug: str, message: str) -> str | None:
    """Commit whatever a worktree holds uncommitted (files git ignores stay out); the new commit, or None when
    it was clean. For a passing agent that forgot to commit: its work is merged rather than lost."""
    path = Path(get(repo, slug)["path"])
    return _commit_dirty(repo, path, message) if path.is_dir() else None


def _commit_dirty(repo, path: Path, message: str) -> str | None:
    """Commit all a checkout holds uncommitted (files git ignores stay out); the new commit, or None if clean."""
    if not git.dirty(path):
        return None
    git.run(["add", "-A"], path)
    git.run(["commit", "--quiet", "--no-verify", "-m", message], path, env=git.identity_env(repo.root))
    return git.rev("HEAD", path)


def _save_unmerged(slug: str, tip: str | None, base: str, cwd: Path) -> str | None:
    """Keep commit `tip` at refs/agentkit/saved/<slug>/<ts>-<sha> when `base` lacks it; that ref, or None."""
    if not tip or tip == base or git.is_ancestor(tip, base, cwd):
        return None
    saved = f"refs/agentkit/saved/{slug}/{time.strftime('%Y%m%dT%H%M%S')}-{tip[:8]}"
    git.run(["update-ref", saved, tip], cwd)
    return saved
