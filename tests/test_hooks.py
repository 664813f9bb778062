"""agentkit's git hooks, fired by a real git: chaining, restoring, core.hooksPath, adoption, agentkit missing."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from agentkit.errors import ExitCode
from tests.conftest import git, wait_until

VENV_BIN = str(Path(sys.executable).parent)  # where the `agentkit` console script the hooks call lives
WITH_AGENTKIT = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
WITHOUT_AGENTKIT = {**os.environ, "PATH": "/usr/bin:/bin"}


def run_git(root: Path, *args: str, env: dict = WITH_AGENTKIT, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env={**os.environ, **env},
                          stdin=subprocess.DEVNULL, timeout=60)
    assert not check or done.returncode == 0, done.stderr
    return done


def foreign_hook(folder: Path, name: str, body: str, mode: int = 0o750) -> bytes:
    """A hook of the user's own (one that logs its arguments and stdin beside itself); its exact bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "$@" >> "$0.args"\ncat >> "$0.stdin"\n{body}\n')
    path.chmod(mode)
    return path.read_bytes()


def merge_docs_change(repo: Path, env: dict = WITH_AGENTKIT) -> subprocess.CompletedProcess:
    git(repo, "switch", "-q", "-c", "side")
    (repo / "docs").mkdir(exist_ok=True)
    (repo / "docs" / "guide.md").write_text("new docs\n")
    git(repo, "add", "docs")
    git(repo, "commit", "-q", "-m", "docs")
    git(repo, "switch", "-q", "main")
    return run_git(repo, "merge", "--no-ff", "-q", "-m", "merge side", "side", env=env)


def test_a_real_merge_fires_ours_and_the_hook_it_chains_to_and_uninstall_restores_it(repo, cli):
    hooks = repo / ".git" / "hooks"
    original = foreign_hook(hooks, "post-merge", "echo theirs >&2; exit 3")
    res = cli("hooks", "install", "--json")
    assert res.code == 0, res.err
    by_name = {h["name"]: h for h in res.json["hooks"]}
    assert [h["name"] for h in res.json["hooks"]] == ["post-merge", "post-checkout"], "pre-push is opt-in"
    assert by_name["post-merge"]["action"] == "chained" and by_name["post-checkout"]["action"] == "installed"
    chained = hooks / "post-merge.agentkit-chained"
    assert chained.read_bytes() == original

    again = cli("hooks", "install", "--json")  # idempotent: ours is never chained to ours
    assert {h["action"] for h in again.json["hooks"]} == {"unchanged"} and chained.read_bytes() == original

    done = merge_docs_change(repo)
    assert "theirs" in done.stderr and (hooks / "post-merge.agentkit-chained.args").read_text() == "0\n"
    assert "agentkit:begin" in (repo / "AGENTS.md").read_text(), "docs/ changed: AGENTS.md regenerated"
    assert "updated" in done.stderr

    status = {h["name"]: h for h in cli("hooks", "status", "--json").json["hooks"]}
    assert status["post-merge"]["owner"] == "agentkit" and status["post-merge"]["chained"] == str(chained)
    assert status["post-merge"]["current"] is True and status["pre-push"]["owner"] is None

    res = cli("hooks", "uninstall", "--json")
    assert res.code == 0 and {h["name"]: h["action"] for h in res.json["hooks"]} == {
        "post-merge": "restored", "post-checkout": "removed", "pre-push": "absent"}
    assert (hooks / "post-merge").read_bytes() == original and not chained.exists()
    assert stat.S_IMODE((hooks / "post-merge").stat().st_mode) == 0o750
    assert not (hooks / "post-checkout").exists()
    assert cli("hooks", "status", "--json").json["hooks"][0]["owner"] == "foreign"


def test_a_failing_pre_existing_pre_push_still_blocks_the_push_ours_never_does(repo, cli, tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    hooks = repo / ".git" / "hooks"
    foreign_hook(hooks, "pre-push", "exit 1")
    assert cli("hooks", "install", "--only", "pre-push").code == 0

    blocked = run_git(repo, "push", "-q", "origin", "main", check=False)
    assert blocked.returncode != 0 and "failed to push" in blocked.stderr
    assert (hooks / "pre-push.agentkit-chained.args").read_text() == f"origin {remote}\n"
    assert "refs/heads/main" in (hooks / "pre-push.agentkit-chained.stdin").read_text(), "the refs on its stdin"

    foreign_hook(hooks, "pre-push.agentkit-chained", "exit 0")  # theirs passes now; AGENTS.md is still missing
    pushed = run_git(repo, "push", "-q", "origin", "main")
    assert "AGENTS.md is out of date" in pushed.stderr
    assert git(remote, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")


def test_git_worktree_add_is_adopted_in_the_background_and_worktree_new_is_left_alone(repo, cli, tmp_path):
    assert cli("hooks", "install").code == 0
    plain = tmp_path / "Elsewhere Feature"
    done = run_git(repo, "worktree", "add", "-q", "-b", "feat/plain", str(plain))
    assert "adopting" in done.stderr

    def adopted():
        rows = cli("worktree", "list", "--json").json["worktrees"]
        # active, not just allocated: the row has its DB before the flush and the env file (status `creating`)
        return next((w for w in rows if w["path"] == str(plain) and w["status"] == "active"
                     and (plain / ".agent.env").exists()), None)

    row = wait_until(adopted, timeout=30)
    assert row["slug"] == "elsewhere-feature" and row["branch"] == "feat/plain" and row["status"] == "active"
    assert f"REDIS_DB={row['redis_db']}" in (plain / ".agent.env").read_text()
    assert run_git(plain, "switch", "-q", "-c", "other").stderr == "", "a known worktree: nothing to adopt"

    made = cli("worktree", "new", "made", "--json", env={"PATH": WITH_AGENTKIT["PATH"]})
    assert made.code == 0, made.err
    gitdir = Path(git(Path(made.json["path"]), "rev-parse", "--absolute-git-dir"))
    assert not (gitdir / "agentkit-adopt.log").exists(), "agentkit's own `git worktree add` skips the hook"
    again = cli("worktree", "adopt", str(plain), "--json")
    assert again.code == 0 and again.json["adopted"] is False and again.json["redis_db"] == row["redis_db"]


def test_install_respects_a_relative_core_hooks_path(repo, cli):
    git(repo, "config", "core.hooksPath", ".githooks")
    original = foreign_hook(repo / ".githooks", "post-merge", "exit 0")
    res = cli("hooks", "install", "--json")
    assert res.code == 0 and res.json["hooks_dir"] == str(repo / ".githooks")
    assert res.json["hooks_path"] == ".githooks"
    assert "relative" in res.json["warning"], "linked worktrees resolve a relative hooksPath in themselves"
    assert (repo / ".githooks" / "post-checkout").is_file() and not (repo / ".git" / "hooks" / "post-checkout").exists()
    merge_docs_change(repo)
    assert (repo / "AGENTS.md").is_file() and (repo / ".githooks" / "post-merge.agentkit-chained.args").exists()
    assert cli("hooks", "uninstall").code == 0
    assert (repo / ".githooks" / "post-merge").read_bytes() == original


def test_git_still_works_with_a_warning_when_agentkit_is_not_on_path(repo, cli, tmp_path):
    assert shutil.which("agentkit", path=WITHOUT_AGENTKIT["PATH"]) is None
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    assert cli("hooks", "install", "--only", "post-merge,post-checkout", "--only", "pre-push").code == 0

    merged = merge_docs_change(repo, env=WITHOUT_AGENTKIT)
    assert "agentkit is not on PATH" in merged.stderr and not (repo / "AGENTS.md").exists()
    added = run_git(repo, "worktree", "add", "-q", "-b", "wt", str(tmp_path / "wt"), env=WITHOUT_AGENTKIT)
    assert "agentkit is not on PATH" in added.stderr and "agentkit worktree adopt" in added.stderr
    pushed = run_git(repo, "push", "-q", "origin", "main", env=WITHOUT_AGENTKIT)
    assert "agentkit is not on PATH" in pushed.stderr


def test_force_sets_a_foreign_hook_aside_unchained_and_uninstall_brings_it_back(repo, cli):
    hooks = repo / ".git" / "hooks"
    original = foreign_hook(hooks, "post-merge", "exit 0")
    res = cli("hooks", "install", "--force", "--only", "post-merge", "--json")
    assert res.json["hooks"][0]["action"] == "replaced" and res.json["hooks"][0]["chained"] is None
    merge_docs_change(repo)
    assert not (hooks / "post-merge.agentkit-replaced.args").exists(), "a replaced hook no longer runs"
    assert cli("hooks", "uninstall").code == 0 and (hooks / "post-merge").read_bytes() == original


def test_bad_input_is_a_usage_error_without_a_traceback(repo, cli, tmp_path):
    res = cli("hooks", "install", "--only", "post-merge,pre-comit", "--json")
    assert res.code == ExitCode.USAGE and "pre-comit" in res.json["error"]["message"]
    assert not (repo / ".git" / "hooks" / "post-merge").exists(), "nothing installed"
    assert cli("hooks", "run", "nope").code == ExitCode.USAGE
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    for args in (("install",), ("status", "--json"), ("uninstall",)):
        res = cli("hooks", *args, cwd=outside)
        assert res.code == ExitCode.USAGE and "not inside a git repository" in res.err and "Traceback" not in res.err


def test_hooks_run_is_the_script_for_a_hook_manager_and_strict_pre_push_blocks(repo, cli):
    env = {"PATH": WITH_AGENTKIT["PATH"]}
    res = cli("hooks", "run", "pre-push", "origin", "/nowhere", env=env)
    assert res.code == 0 and "AGENTS.md is out of date" in res.err
    assert cli("hooks", "run", "pre-push", "origin", "/nowhere", env={**env, "AGENTKIT_PRE_PUSH_STRICT": "1"}).code == 1
    assert cli("install-docs").code == 0
    res = cli("hooks", "run", "pre-push", "origin", "/nowhere", env={**env, "AGENTKIT_PRE_PUSH_STRICT": "1"})
    assert res.code == 0 and res.err == ""


def test_a_husky_hook_is_not_chained_and_a_renamed_hook_of_ours_still_runs_the_chained_one(repo, cli):
    """husky v9's stubs dispatch on their own file name, so chaining one would silence it: refused (exit 7) with
    what to add to .husky/NAME. And ours finds the hook it chains to by its name, not by `$0`, so a manager that
    runs ours under another name (pre-commit's `.legacy`) still runs the user's hook."""
    husky = repo / ".husky" / "_"
    husky.mkdir(parents=True)
    (husky / "h").write_text("#!/bin/sh\nexit 0\n")
    stub = husky / "post-merge"
    stub.write_text('#!/usr/bin/env sh\n. "$(dirname "$0")/h"\n')
    stub.chmod(0o755)
    git(repo, "config", "core.hooksPath", ".husky/_")
    refused = cli("hooks", "install", "--only", "post-merge", "--json")
    assert refused.code == ExitCode.CONFLICT and "husky" in refused.json["error"]["message"]
    assert "agentkit hooks run post-merge" in refused.json["error"]["hint"]
    assert stub.read_text().endswith('/h"\n'), "husky's stub is left as it was"
    git(repo, "config", "--unset", "core.hooksPath")

    hooks = repo / ".git" / "hooks"
    foreign_hook(hooks, "post-merge", "exit 0")
    assert cli("hooks", "install").code == 0
    os.replace(hooks / "post-merge", hooks / "post-merge.legacy")  # what pre-commit does to a hook not its own
    wrapper = hooks / "post-merge"
    wrapper.write_text('#!/bin/sh\n"$(dirname "$0")/post-merge.legacy" "$@"\n')
    wrapper.chmod(0o755)
    merge_docs_change(repo)
    assert (hooks / "post-merge.agentkit-chained.args").exists(), "the user's hook ran under the wrapper"
