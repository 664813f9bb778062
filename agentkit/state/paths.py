"""Resolution of the repository and its .agents/ folder from any worktree of it."""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agentkit.state import ExitCode, StateError, os_failure


@dataclass(frozen=True)
class Paths:
    root: Path  # the main worktree: where .agents/ lives
    git_common_dir: Path
    agents: Path
    from_env: bool = False  # `agents` is AGENTKIT_HOME's, not the default .agents/

    @property
    def db(self) -> Path:
        return self.agents / "agentkit.db"

    @property
    def capacity_file(self) -> Path:
        return self.agents / "redis-capacity.json"

    @property
    def redis_dir(self) -> Path:
        return self.agents / "redis"

    @property
    def config_file(self) -> Path:
        return self.agents / "config.toml"

    def ensure(self) -> None:
        """Create .agents/ and keep it out of git without touching the repo's own .gitignore."""
        try:
            if not self.agents.is_dir():
                self.agents.mkdir(parents=True, exist_ok=True)
            ignore = self.agents / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# created by agentkit: everything here is local state\n*\n")
        except OSError as exc:
            raise self._unusable(exc) from exc

    def _unusable(self, exc: OSError) -> StateError:
        """The state folder cannot be made or written: bad AGENTKIT_HOME is bad input (2), a broken .agents/ a
        failure (1)."""
        where = f"state folder {self.agents}" + (" (from AGENTKIT_HOME)" if self.from_env else "")
        code = ExitCode.USAGE if self.from_env else ExitCode.FAILED
        if os.path.lexists(self.agents) and not os.path.isdir(self.agents):
            fix = ("point AGENTKIT_HOME at a folder, or unset it" if self.from_env
                   else f"move it aside (mv {self.agents} {self.agents}.bak) and rerun")
            return StateError(f"{where} is a file, not a folder", fix, code)
        failure = os_failure(exc, where, code)
        if self.from_env:
            failure.hint = "point AGENTKIT_HOME at a folder this user can write, on a normal filesystem, or unset it"
        return failure


def _common_dir_from_dotgit(dotgit: Path) -> Path | None:
    """Read .git (a folder, or a file pointing at a linked worktree's gitdir) without running git."""
    if dotgit.is_dir():
        return dotgit
    try:
        text = dotgit.read_text().strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = (dotgit.parent / text[len("gitdir:"):].strip()).resolve()
    commondir = gitdir / "commondir"
    if commondir.is_file():
        return (gitdir / commondir.read_text().strip()).resolve()
    return gitdir


def _ask_git(start: Path) -> Path:
    try:
        out = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                             cwd=start, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise StateError("git is not installed", "install git and retry", ExitCode.FAILED) from exc
    if out.returncode != 0:
        raise StateError(f"not inside a git repository: {start}",
                         "run agentkit from a checkout of your repo, or pass -C PATH", ExitCode.USAGE)
    return Path(out.stdout.strip())


def resolve(start: Path | None = None) -> Paths:
    """Find the main worktree and its .agents/ from `start` (default: the current directory)."""
    start = (start or Path.cwd()).resolve()
    common: Path | None = None
    if not os.environ.get("GIT_DIR"):
        for folder in (start, *start.parents):
            dotgit = folder / ".git"
            if dotgit.exists():
                common = _common_dir_from_dotgit(dotgit)
                break
    if common is None:
        common = _ask_git(start)
    if common.name == ".git":
        root = common.parent
    else:  # a bare repository or an unusual layout: keep state beside the git dir
        root = common
    home = os.environ.get("AGENTKIT_HOME")
    agents = (root / home).resolve() if home else root / ".agents"  # relative: to the main worktree
    return Paths(root=root, git_common_dir=common, agents=agents, from_env=bool(home))
