"""agentkit's git helpers where they answer without running git: they must say what git itself would."""

import subprocess
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from agentkit import git
from agentkit.state.locks import named_lock

# the characters that make git's ref-name rules bite, and plain ones
NAMES = st.text(alphabet=st.sampled_from(list("ab9_-./@{}~^:?*[ \\lockHEAD")), min_size=1, max_size=14)


@settings(max_examples=300, deadline=None)
@given(name=NAMES)
def test_valid_branch_name_says_what_git_check_ref_format_says(tmp_path_factory, name):
    cwd = tmp_path_factory.getbasetemp()
    asked = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=cwd, capture_output=True)
    assert git.valid_branch_name(name, cwd) == (asked.returncode == 0), name


def test_rev_remembers_a_commit_for_its_own_repository_only(repo, tmp_path):
    head = git.rev("HEAD", repo)
    assert head and git.rev(head, repo) == head
    assert git.rev("f" * 40, repo) is None
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=other, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m",
                    "other"], cwd=other, check=True)
    assert git.rev(head, other) is None, "a commit of another repository is not taken for one of this one"


def test_branch_tips_lists_only_the_branches_that_exist_exactly(repo):
    head = git.rev("HEAD", repo)
    subprocess.run(["git", "branch", "agent/a"], cwd=repo, check=True)
    subprocess.run(["git", "branch", "agent/a/deeper"], cwd=repo, check=False)  # refused: agent/a is a file ref
    subprocess.run(["git", "branch", "agent/ab"], cwd=repo, check=True)
    assert git.branch_tips(["agent/a", "agent/missing"], repo) == {"agent/a": head}


def test_threads_of_one_process_take_a_named_lock_in_turn(tmp_path):
    """Threads wait on the in-process lock (no polling), one holder at a time, and a timeout still fires."""
    inside, most, errors = [0], [0], []

    def hold():
        try:
            with named_lock(tmp_path, "git", timeout=10):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.02)
                inside[0] -= 1
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and most[0] == 1

    held = threading.Event()
    release = threading.Event()

    def keep():
        with named_lock(tmp_path, "git", timeout=10):
            held.set()
            release.wait(5)

    keeper = threading.Thread(target=keep)
    keeper.start()
    held.wait(5)
    try:
        started = time.monotonic()
        try:
            with named_lock(tmp_path, "git", timeout=0.2):
                raise AssertionError("took a lock another thread holds")
        except Exception as exc:  # noqa: BLE001
            assert "timed out" in str(exc)
        assert time.monotonic() - started < 2
    finally:
        release.set()
        keeper.join()
