"""The integration branch: passed work merged in, so a dependent task starts on its dependencies' code.

Merges never touch a checkout: `git merge-tree --write-tree` computes the merge, `commit-tree` records it and
`update-ref` moves the branch only if nobody moved it meanwhile. The user's checked-out branch is never one."""

import subprocess
from pathlib import Path

from agentkit import events, git
from agentkit.errors import AgentkitError, usage

DEFAULT = "agentkit/integration"
NONE = "none"


def _checked_out(repo, branch: str) -> str | None:
    """The worktree (any, the main checkout included) that has `branch` checked out, if one does."""
    for wt in git.worktrees(repo.root):
        if wt.get("branch") == branch:
            return wt["path"]
    return None


def ensure(repo, into: str) -> dict:
    """The integration branch `into`, created from HEAD on first use; refused when it is checked out anywhere."""
    if not git.valid_branch_name(into, repo.root):
        raise usage(f"--into {into!r} is not a valid branch name", f"for example: --into {DEFAULT}, or --into none")
    where = _checked_out(repo, into)
    if where is not None:
        raise usage(f"--into {into}: that branch is checked out in {where}",
                    "agentkit moves the integration branch itself; pick another (the default is "
                    f"{DEFAULT}) or check out something else there")
    created = False
    head = git.rev(f"refs/heads/{into}", repo.root)
    if head is None:
        base = git.head_commit(repo.root)
        git.run(["update-ref", f"refs/heads/{into}", base, "0" * 40], repo.root, check=False)
        head, created = git.rev(f"refs/heads/{into}", repo.root), True
    return {"branch": into, "head": head, "created": created}


def head(repo, into: str) -> str:
    found = git.rev(f"refs/heads/{into}", repo.root)
    if found is None:
        raise AgentkitError(f"the integration branch {into} is gone", f"rerun `agentkit run --into {into}`: it is "
                            "created again from HEAD")
    return found


def _resolve(repo, names: list[str], env: dict) -> list[str | None]:
    """Object ids of `names` (None for a missing one), from one git process."""
    done = subprocess.run(["git", "cat-file", "--batch-check=%(objectname)"], cwd=repo.root, env=env, text=True,
                          input="".join(f"{n}\n" for n in names), capture_output=True, start_new_session=True)
    lines = done.stdout.splitlines()
    return [None if i >= len(lines) or lines[i].endswith(" missing") else lines[i] for i in range(len(names))]


def merge(repo, into: str, branch: str, message: str, env: dict | None = None) -> dict:
    """Merge `branch` into the integration branch `into`, under the integration lock.

    Returns ``{"merged": True, "commit"}``; ``{"merged": False, "reason": …}`` when the branch holds nothing the
    integration branch lacks, or is gone; ``{"merged": False, "conflicts": [paths]}`` on a conflict, with
    nothing changed (the branch is kept as it was). `env`: git's environment with a committer identity
    (`git.identity_env`), which a caller merging many branches computes once."""
    env = env or git.identity_env(repo.root)
    with repo.lock("integration"):
        ours, our_tree, theirs = _resolve(repo, [f"refs/heads/{into}", f"refs/heads/{into}^{{tree}}",
                                                 f"refs/heads/{branch}"], env)
        if ours is None:
            head(repo, into)  # raises: the integration branch is gone
        if theirs is None:  # removed with its worktree: it held no commits (or was settled before a crash)
            return {"merged": False, "reason": f"branch {branch} is gone", "commit": ours}
        tree = git.run(["merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs], repo.root,
                       check=False, env=env)
        lines = tree.stdout.splitlines()
        if tree.returncode == 1:
            return {"merged": False, "conflicts": sorted({ln for ln in lines[1:] if ln.strip()}), "commit": ours}
        if tree.returncode != 0 or not lines:
            raise AgentkitError(f"git merge-tree failed: {tree.stderr.strip() or tree.stdout.strip()}",
                                "integration needs git 2.38 or newer (`git --version`); or run with --into none")
        if lines[0] == our_tree:  # everything on the branch is in already
            return {"merged": False, "reason": "nothing to merge", "commit": ours}
        made = git.run(["commit-tree", lines[0], "-p", ours, "-p", theirs, "-m", message], repo.root, check=False,
                       env=env)
        if made.returncode != 0:
            raise AgentkitError(f"git commit-tree failed: {made.stderr.strip()}", "fix the git problem and rerun")
        commit = made.stdout.strip()
        moved = git.run(["update-ref", "-m", message, f"refs/heads/{into}", commit, ours], repo.root, check=False,
                        env=env)
        if moved.returncode != 0:
            raise AgentkitError(f"could not move {into}: {moved.stderr.strip()}",
                                "something else moved the integration branch; rerun to merge again")
    with repo.store.tx() as conn:
        events.record(conn, "integration.merged", into, branch=branch, commit=commit)
    return {"merged": True, "commit": commit}


def files_of(repo, commit: str) -> list[str]:
    """The files a merge commit brought into the integration branch."""
    done = git.run(["diff", "--name-only", f"{commit}^1", commit], repo.root, check=False)
    return done.stdout.split() if done.returncode == 0 else []


def log(repo, into: str, limit: int = 50) -> list[dict]:
    """What the integration branch has taken in (its merge commits, newest first)."""
    fmt = "%H%x00%s"
    out = git.run(["log", "--first-parent", f"-n{limit}", f"--format={fmt}", f"refs/heads/{into}"],
                  Path(repo.root), check=False).stdout
    return [dict(zip(("commit", "subject"), line.split("\0"), strict=False)) for line in out.splitlines() if line]
