"""agentkit's git hooks: where they go (the common git dir's hooks, or core.hooksPath), installed over and chained
to the hooks already there, removed with those restored byte for byte."""

import os
import re
from importlib.resources import files
from pathlib import Path

from agentkit import git
from agentkit.errors import conflict, usage
from agentkit.state.files import atomic_write

SCHEMA_VERSION = 1
NAMES = ("post-merge", "post-checkout", "pre-push")
DEFAULT = ("post-merge", "post-checkout")  # pre-push is opt-in: `--only pre-push`
MARKER = "# agentkit-hook:"  # the line that makes a hook file ours
CHAINED = ".agentkit-chained"  # a hook that was there first: ours runs it, and its exit status counts
REPLACED = ".agentkit-replaced"  # a hook `install --force` put aside without chaining: never run, restored
MANAGERS = ("husky", "lefthook", "pre-commit")  # hook managers recognised in a foreign hook's text


def names(only: list[str] | None, default: tuple[str, ...] = DEFAULT) -> list[str]:
    """The hook names `--only` gives (comma-separated, repeatable), in NAMES order; `default` without it."""
    if not only:
        return list(default)
    wanted = {n.strip() for item in only for n in item.split(",") if n.strip()}
    unknown = sorted(wanted - set(NAMES))
    if unknown or not wanted:
        raise usage(f"unknown hook name {', '.join(map(repr, unknown)) or repr(',')}",
                    f"pass --only with some of: {', '.join(NAMES)}")
    return [n for n in NAMES if n in wanted]


def script(name: str) -> Path:
    """The shipped script of hook `name` (package data, agentkit/data/hooks/)."""
    if name not in NAMES:
        raise usage(f"unknown hook name {name!r}", f"agentkit's hooks are: {', '.join(NAMES)}")
    return Path(str(files("agentkit").joinpath("data/hooks", name)))


def hooks_dir(repo) -> tuple[Path, str | None]:
    """Where git looks for hooks: core.hooksPath when set (relative: to the repo root), else the common git
    dir's hooks/, which every worktree shares. Also the core.hooksPath value (None when unset)."""
    done = git.run(["config", "--type=path", "--get", "core.hooksPath"], repo.root, check=False)
    configured = done.stdout.strip() or None
    if configured is None:
        return repo.paths.git_common_dir / "hooks", None
    path = Path(configured)
    return (path if path.is_absolute() else repo.root / path), configured


def _text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # a folder, a dangling symlink, no permission: not ours, whatever it is
        return None


def _is_ours(path: Path) -> bool:
    text = _text(path)
    return text is not None and MARKER in text


# husky v9's stubs (.husky/_/NAME) name no manager: they source their folder's `h`, which dispatches on the
# file's own name, so a stub renamed to NAME.agentkit-chained would run nothing
_HUSKY_STUB = re.compile(r'^\s*\.\s+"?\$\(dirname\s+"?\$0"?\)/h"?\s*$', re.M)


def _manager(path: Path) -> str | None:
    text = _text(path) or ""
    if _HUSKY_STUB.search(text) or (path.parent.name == "_" and path.parent.parent.name == ".husky"):
        return "husky"
    return next((m for m in MANAGERS if m in text.lower()), None)


def _one_status(folder: Path, name: str) -> dict:
    path = folder / name
    present = os.path.lexists(path)
    ours = present and _is_ours(path)
    chained = folder / (name + CHAINED)
    replaced = folder / (name + REPLACED)
    has_chain = os.path.lexists(chained)
    return {"name": name, "path": str(path), "installed": ours,
            "owner": None if not present else "agentkit" if ours else "foreign",
            "current": (_text(path) == script(name).read_text()) if ours else None,
            "chained": str(chained) if has_chain else None,
            "chained_runs": has_chain and os.access(chained, os.X_OK),
            "replaced": str(replaced) if os.path.lexists(replaced) else None,
            "manager": _manager(path) if present and not ours else (_manager(chained) if has_chain else None)}


def status(repo) -> dict:
    """Each of agentkit's hooks: installed (ours) or not, a foreign hook in its place, the hook it chains to,
    whether ours is the shipped version (`current`), and a hook manager seen in a foreign or chained hook."""
    folder, configured = hooks_dir(repo)
    return {"schema_version": SCHEMA_VERSION, "hooks_dir": str(folder), "hooks_path": configured,
            "hooks": [_one_status(folder, name) for name in NAMES]}


def _write(path: Path, name: str) -> None:
    atomic_write(path, script(name).read_text(), mode=0o755)


def _install_one(folder: Path, name: str, force: bool) -> dict:
    path, chained, replaced = folder / name, folder / (name + CHAINED), folder / (name + REPLACED)
    before = _one_status(folder, name)
    if before["owner"] == "agentkit":  # never chain ours to ours: refresh it in place
        action = "unchanged" if before["current"] else "updated"
    elif before["owner"] == "foreign" and force:
        if os.path.lexists(replaced):
            raise conflict(f"{replaced} exists already: a hook replaced earlier is kept there",
                           f"move it away (or back to {path}) first, then rerun")
        os.replace(path, replaced)
        action = "replaced"
    elif before["owner"] == "foreign" and before["manager"] == "husky":
        raise conflict(f"{path} is husky's: chained under another name it would run nothing",
                       f'call agentkit\'s from husky instead: add `agentkit hooks run {name} "$@"` to .husky/{name} '
                       "(see docs/hooks.md), or rerun with --force to set husky's aside")
    elif before["owner"] == "foreign":
        if os.path.lexists(chained):
            raise conflict(f"{path} is not agentkit's, and {chained} exists already",
                           "merge the two by hand, or rerun with --force to set the one in place aside unchained")
        os.replace(path, chained)  # a rename: bytes, mode and a symlink kept as they are, for uninstall
        action = "chained"
    else:
        action = "installed"
    if action != "unchanged":
        _write(path, name)
    return {**_one_status(folder, name), "action": action, "manager": before["manager"]}


def install(repo, only: list[str] | None = None, force: bool = False) -> dict:
    """Install agentkit's hooks (`only`, else the default ones) where git runs them. A foreign hook in the way is
    moved to NAME.agentkit-chained and run first by ours (its exit status counts); with `force` it is moved to
    NAME.agentkit-replaced and no longer runs. Installing again only refreshes ours."""
    wanted = names(only)
    folder, configured = hooks_dir(repo)
    folder.mkdir(parents=True, exist_ok=True)
    done = {"schema_version": SCHEMA_VERSION, "hooks_dir": str(folder), "hooks_path": configured,
            "hooks": [_install_one(folder, name, force) for name in wanted]}
    if configured and not Path(configured).is_absolute():
        done["warning"] = (f"core.hooksPath {configured!r} is relative: git resolves it in the worktree a hook runs "
                           f"in, so linked worktrees do not find {folder}; set it absolute to cover them "
                           f'(git config core.hooksPath "{folder}")')
    return done


def _uninstall_one(folder: Path, name: str) -> dict:
    path, chained, replaced = folder / name, folder / (name + CHAINED), folder / (name + REPLACED)
    before = _one_status(folder, name)
    if before["owner"] != "agentkit":
        action = "foreign" if before["owner"] else "absent"  # not ours: left alone
    elif os.path.lexists(replaced):
        os.replace(replaced, path)
        action = "restored"
    elif os.path.lexists(chained):
        os.replace(chained, path)
        action = "restored"
    else:
        path.unlink()
        action = "removed"
    return {**_one_status(folder, name), "action": action}


def uninstall(repo, only: list[str] | None = None) -> dict:
    """Remove agentkit's hooks (`only`, else all of them), putting back the hooks they chained to or replaced,
    byte for byte and with their mode. A hook that is not ours is left as it is."""
    wanted = names(only, NAMES)
    folder, configured = hooks_dir(repo)
    return {"schema_version": SCHEMA_VERSION, "hooks_dir": str(folder), "hooks_path": configured,
            "hooks": [_uninstall_one(folder, name) for name in wanted]}
