"""The git commands agentkit runs, with their failures turned into errors that name the fix."""

import subprocess
from pathlib import Path

from agentkit.errors import AgentkitError


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a git command and return at once, so other work overlaps it; `wait` collects it.

    git runs in a session of its own: agentkit killed (alone, or with its process group as when its terminal
    goes away) never kills a git midway, which would leave a half checkout or a stale lock file; that git
    finishes on its own (repairs wait for it) and, writing nothing on success, never meets the dead pipe."""
    return subprocess.Popen(["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def wait(proc: subprocess.Popen, check: bool = True) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check and done.returncode != 0:
        raise AgentkitError(f"{' '.join(proc.args)} failed: {stderr.strip() or stdout.strip()}",
                            "fix the git problem shown above and rerun")
    return done


def run(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return wait(start(args, cwd, env), check)


_IDENTITY = {"GIT_AUTHOR_NAME": "agentkit", "GIT_AUTHOR_EMAIL": "agentkit@localhost",
             "GIT_COMMITTER_NAME": "agentkit", "GIT_COMMITTER_EMAIL": "agentkit@localhost"}


def identity_env(cwd: Path) -> dict:
    """The environment for a git that commits: the user's identity when git knows one, else agentkit's, so a
    commit agentkit makes never fails on a fresh machine."""
    import os

    env = dict(os.environ)
    if run(["var", "GIT_COMMITTER_IDENT"], cwd, check=False).returncode != 0:
        env.update({k: v for k, v in _IDENTITY.items() if k not in env})
    return env


def out(args: list[str], cwd: Path) -> str:
    return run(args, cwd).stdout.strip()


def out_many(commands: list[list[str]], cwd: Path) -> list[str]:
    """Run read-only git commands side by side (each costs a process start) and return their stdouts."""
    return [wait(proc).stdout.strip() for proc in [start(args, cwd) for args in commands]]


WORKTREE_LIST = ["worktree", "list", "--porcelain"]


def worktrees(root: Path, porcelain: str | None = None) -> list[dict]:
    """`git worktree list --porcelain` (run now, or its output given) as dicts: path, head, branch (short),
    prunable, bare, detached, locked and lock_reason (git's own half-made worktrees say "initializing")."""
    items, cur = [], {}
    text = porcelain if porcelain is not None else run(WORKTREE_LIST, root).stdout
    for line in text.splitlines() + [""]:
        if not line:
            if cur:
                items.append(cur)
            cur = {}
            continue
        key, _, value = line.partition(" ")
        if key == "worktree":
            cur = {"path": value, "head": None, "branch": None, "prunable": False, "bare": False}
        elif key == "HEAD":
            cur["head"] = value
        elif key == "branch":
            cur["branch"] = value.removeprefix("refs/heads/")
        elif key in ("prunable", "bare", "detached", "locked"):
            cur[key] = True
            if key == "locked":
                cur["lock_reason"] = value
    return items


_COMMITS: set[tuple[str, str]] = set()  # (folder, commit id) seen to exist: a commit never changes, so one look


def rev(ref: str, cwd: Path) -> str | None:
    """The commit `ref` names, or None. A full commit id already seen to exist is answered without a git."""
    if (str(cwd), ref) in _COMMITS:
        return ref
    done = run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd, check=False)
    commit = done.stdout.strip() or None
    if commit is not None:
        _COMMITS.add((str(cwd), commit))
    return commit


def branch_tips(branches: list[str], cwd: Path) -> dict[str, str]:
    """The commit each existing branch of `branches` points at (one git for all); missing ones are left out."""
    wanted = {f"refs/heads/{b}": b for b in branches}
    text = run(["for-each-ref", "--format=%(objectname) %(refname)", *wanted], cwd).stdout
    return {wanted[ref]: oid for oid, _, ref in (line.partition(" ") for line in text.splitlines()) if ref in wanted}


def head_commit(cwd: Path) -> str:
    """The commit HEAD names; a usage error (exit 2) in a repository with no commits yet."""
    from agentkit.errors import usage

    head = rev("HEAD", cwd)
    if head is None:
        raise usage("this repository has no commits yet: HEAD names no commit",
                    "make a first commit (git commit --allow-empty -m 'first commit')")
    return head


def branch_exists(branch: str, cwd: Path) -> bool:
    return run(["show-ref", "--verify", "--quiet", f"refs/heads/{branch}"], cwd, check=False).returncode == 0


# `git status` refreshes the index when it may (an "optional" lock): killed meanwhile, it would leave an
# index.lock that makes every later `git add` or `commit` there fail. agentkit only looks, so it never takes it.
NO_OPTIONAL_LOCKS = "--no-optional-locks"


def dirty(path: Path) -> list[str]:
    """Uncommitted changes (tracked or untracked, not ignored) in a worktree, as porcelain lines."""
    return [ln for ln in run([NO_OPTIONAL_LOCKS, "status", "--porcelain"], path).stdout.splitlines() if ln]


def remove_worktree(path: Path, cwd: Path, force: bool, check: bool = True) -> subprocess.CompletedProcess:
    """`git worktree remove` (its own check for changes is a `git status`, which takes no optional lock here)."""
    return run([NO_OPTIONAL_LOCKS, "worktree", "remove", *(["--force"] if force else []), str(path)], cwd, check)


def stale_locks(path: Path) -> list[Path]:
    """Lock files (index.lock, HEAD.lock) in the own git dir of the worktree at `path`: a killed git's."""
    try:
        gitdir = (path / ".git").read_text().removeprefix("gitdir:").strip()
    except OSError:
        return []
    return sorted((path / gitdir).glob("*.lock"))


def is_ancestor(commit: str, of: str, cwd: Path) -> bool:
    return run(["merge-base", "--is-ancestor", commit, of], cwd, check=False).returncode == 0


def valid_branch_name(name: str, cwd: Path) -> bool:
    """git's own answer (`check-ref-format --branch`), asked only when the name is not plainly valid."""
    import re

    parts = name.split("/")
    if (re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*", name) and ".." not in name
            and not name.endswith(".") and not any(p.endswith(".lock") for p in parts) and name != "HEAD"):
        return True  # letters, digits, _ . - and / between parts: within every rule git has for ref names
    return run(["check-ref-format", "--branch", name], cwd, check=False).returncode == 0
