"""Worktree lifecycle against a real git repository and a real (managed) redis-server."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis as redis_py

from agentkit.errors import ExitCode
from tests.conftest import ak, git


def rclient(url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(url, decode_responses=True)


def test_new_creates_worktree_slot_ports_and_env_file(repo, cli):
    res = cli("worktree", "new", "feat-x", "--json")
    assert res.code == 0, res.err
    wt = res.json
    path = Path(wt["path"])
    assert path == repo.parent / "app-worktrees" / "feat-x"
    assert wt["branch"] == "agent/feat-x" and wt["redis_db"] == 1
    assert wt["redis_url"].endswith("/1") and len(wt["ports"]) == 10
    assert git(path, "rev-parse", "--abbrev-ref", "HEAD") == "agent/feat-x"
    env = dict(line.split("=", 1) for line in Path(wt["env_file"]).read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["REDIS_URL"] == wt["redis_url"] and env["REDIS_DB"] == "1"
    assert env["PORT"] == str(wt["ports"][0]) and env["AGENTKIT_SLUG"] == "feat-x"
    assert git(path, "status", "--porcelain") == "", "the env file must not show as a change"
    assert git(repo, "status", "--porcelain") == "", ".agents/ must not show in the main checkout"
    second = cli("worktree", "new", "feat-y", "--json").json
    assert second["redis_db"] == 2 and set(second["ports"]).isdisjoint(wt["ports"])


def test_new_flushes_the_slot_it_hands_out_and_remove_flushes_too(repo, cli):
    first = cli("worktree", "new", "a", "--json").json
    client = rclient(first["redis_url"])
    client.set("left-behind", "1")
    assert cli("worktree", "remove", "a").code == 0
    assert client.dbsize() == 0, "remove flushes the worktree's DB"
    client.set("written-after-remove", "1")  # e.g. a straggler process
    again = cli("worktree", "new", "b", "--json").json
    assert again["redis_db"] == first["redis_db"], "lowest free slot is reused"
    assert rclient(again["redis_url"]).dbsize() == 0, "new flushes the slot before handing it out"


def test_reserved_db_zero_is_never_flushed(repo, cli):
    made = cli("worktree", "new", "a", "--json")
    assert made.code == 0, made.err
    base = made.json["redis_url"].rsplit("/", 1)[0]
    rclient(base + "/0").set("main-checkout", "keep")
    removed = cli("worktree", "remove", "a", "--json")
    assert removed.code == 0 and removed.json["flushed"] is True, removed.err
    again = cli("worktree", "new", "b", "--json")
    assert again.code == 0 and again.json["redis_db"] == 1, again.err
    assert rclient(base + "/0").get("main-checkout") == "keep"


def test_remove_refuses_uncommitted_work_unless_forced(repo, cli):
    wt = cli("worktree", "new", "a", "--json").json
    (Path(wt["path"]) / "work.txt").write_text("unsaved\n")
    res = cli("worktree", "remove", "a", "--json")
    assert res.code == ExitCode.CONFLICT
    assert "uncommitted" in res.json["error"]["message"] and "work.txt" in res.json["error"]["message"]
    assert Path(wt["path"]).is_dir()
    dry = cli("worktree", "remove", "a", "--force", "--dry-run", "--json")
    assert dry.code == 0 and dry.json["dry_run"] and Path(wt["path"]).is_dir()
    assert cli("worktree", "remove", "a", "--force").code == 0
    assert not Path(wt["path"]).exists()
    assert cli("worktree", "list", "--json").json["worktrees"] == []


def test_remove_keeps_a_branch_with_unmerged_commits(repo, cli):
    wt = cli("worktree", "new", "a", "--json").json
    (Path(wt["path"]) / "f.txt").write_text("x\n")
    git(Path(wt["path"]), "add", "f.txt")
    git(Path(wt["path"]), "commit", "-qm", "agent work")
    assert cli("worktree", "remove", "a").code == 0
    assert git(repo, "branch", "--list", "agent/a") != "", "commits are never lost"
    cli("worktree", "new", "b")
    assert cli("worktree", "remove", "b").code == 0
    assert git(repo, "branch", "--list", "agent/b") == "", "an untouched branch is deleted"


@pytest.mark.parametrize("slug", ["Bad", "-x", "a b", "a..b", "x.lock", "a/b", "é", "x" * 64])
def test_bad_slugs_exit_2(repo, cli, slug):
    res = cli("worktree", "new", "--json", "--", slug)
    assert res.code == ExitCode.USAGE
    assert "invalid slug" in res.json["error"]["message"]
    assert not (repo / ".agents" / "redis" / "redis.pid").exists(), "rejected before Redis is started"


def test_unknown_slugs_exit_6(repo, cli):
    for cmd in (["remove", "nope"], ["up", "nope"]):
        res = cli("worktree", *cmd, "--json")
        assert res.code == ExitCode.NOT_FOUND, res.err
        assert "unknown worktree 'nope'" in res.json["error"]["message"]


def test_duplicate_slug_and_bad_base_are_refused(repo, cli):
    assert cli("worktree", "new", "a").code == 0
    assert cli("worktree", "new", "a", "--json").code == ExitCode.CONFLICT
    res = cli("worktree", "new", "b", "--base", "no-such-ref", "--json")
    assert res.code == ExitCode.USAGE and "no-such-ref" in res.json["error"]["message"]


def test_not_a_repo_exits_2(tmp_path):
    res = ak("worktree", "list", "--json", cwd=tmp_path)
    assert res.code == ExitCode.USAGE
    assert "not inside a git repository" in res.json["error"]["message"]


def test_redis_down_fails_with_the_url_and_makes_nothing(repo, cli, tmp_path):
    from tests.conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    res = cli("worktree", "new", "a", "--json", env={"AGENTKIT_REDIS_URL": url})
    assert res.code == ExitCode.FAILED
    assert url in res.json["error"]["message"] and "unreachable" in res.json["error"]["message"]
    assert res.json["error"]["hint"]
    assert not (repo.parent / "app-worktrees" / "a").exists()
    assert git(repo, "branch", "--list", "agent/a") == ""
    assert cli("worktree", "list", "--json", env={"AGENTKIT_REDIS_URL": url}).json["worktrees"] == []


def assert_nothing_of(repo, cli, slug: str, env: dict | None = None, branch_kept: bool = False) -> None:
    """What a rolled-back `new` leaves: no folder, no git worktree entry, no row, no slot, and no branch unless
    it was there before."""
    assert not (repo.parent / "app-worktrees" / slug).exists()
    assert not (repo / ".git" / "worktrees" / slug).exists() and "app-worktrees" not in git(repo, "worktree", "list")
    assert (git(repo, "branch", "--list", f"agent/{slug}") != "") is branch_kept
    assert cli("worktree", "list", "--json", env=env).json["worktrees"] == []
    assert cli("scale", "status", "--json", env=env).json["used"] == 0


@pytest.mark.parametrize("existing_branch", [False, True])
def test_a_redis_that_refuses_flushdb_rolls_new_back(repo, cli, tmp_path, existing_branch):
    """The flush runs while git checks out: when it fails, the checkout git finished is taken back, and the
    branch too, but only if agentkit made it (some hosted Redis disable FLUSHDB)."""
    from tests.conftest import start_redis

    server = start_redis(tmp_path / "noflush", extra='rename-command FLUSHDB ""\n')
    env = {"AGENTKIT_REDIS_URL": server.url}
    try:
        if existing_branch:
            git(repo, "branch", "agent/a")
        res = cli("worktree", "new", "a", "--json", env=env)
        assert res.code == ExitCode.FAILED
        assert "unknown command" in res.json["error"]["message"].lower()
        assert_nothing_of(repo, cli, "a", env, branch_kept=existing_branch)
        kinds = [e["kind"] for e in cli("events", "--json", env=env).json["events"]]
        assert kinds[-2:] == ["worktree.allocated", "worktree.rolled_back"]
    finally:
        server.stop()


def without_root_override() -> list[str]:
    """A command prefix under which permission bits bind root too (it drops CAP_DAC_OVERRIDE)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: read-only folders would not stop root")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


@pytest.mark.parametrize("read_only", [".agents", "worktrees root"])
def test_new_is_all_or_nothing_when_a_folder_is_read_only(repo, cli, read_only):
    """`.agents/` read-only: the worktree is checked out before writing there fails. The worktrees' root
    read-only: git has made the branch before it fails to make the folder. Either way nothing is left."""
    assert cli("worktree", "new", "first").code == 0 and cli("worktree", "remove", "first").code == 0
    folder = repo / ".agents" if read_only == ".agents" else repo.parent / "app-worktrees"
    folder.chmod(0o555)
    try:
        done = subprocess.run([*without_root_override(), sys.executable, "-m", "agentkit.cli", "worktree", "new", "a",
                               "--json"], cwd=repo, capture_output=True, text=True)
    finally:
        folder.chmod(0o755)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["error"]["message"]
    assert_nothing_of(repo, cli, "a")


def test_external_redis_by_url(repo, cli, external_redis):
    env = {"AGENTKIT_REDIS_URL": external_redis.url}
    wt = cli("worktree", "new", "a", "--json", env=env).json
    assert wt["redis_url"] == external_redis.url.rsplit("/", 1)[0] + "/1"
    assert not (repo / ".agents" / "redis" / "redis.pid").exists(), "no managed Redis when a URL is set"


@pytest.mark.parametrize("redis_started", [True, False], ids=["redis-running", "redis-not-started"])
def test_thirty_concurrent_new_processes_get_distinct_slots(repo, redis_started):
    """Also with the managed Redis not started yet: one of them starts it, the others wait for it (its pidfile
    exists before it answers) instead of reading a URL that is not there yet."""
    if redis_started:
        assert ak("redis", "start", cwd=repo).code == 0
    procs = [subprocess.Popen([sys.executable, "-m", "agentkit.cli", "worktree", "new", f"c{i:02d}", "--json"],
                              cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(30)]
    results = [(p.wait(120), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err for code, _, err in results if code]
    dbs = sorted(json.loads(out)["redis_db"] for _, out, _ in results)
    assert dbs == list(range(1, 31))
    listed = ak("worktree", "list", "--json", cwd=repo).json["worktrees"]
    assert len(listed) == 30 and {w["status"] for w in listed} == {"active"}
    assert len(git(repo, "worktree", "list").splitlines()) == 31
    assert ak("scale", "status", "--json", cwd=repo).json["current"] == 30
    urls = {json.loads(out)["redis_url"].rsplit("/", 1)[0] for _, out, _ in results}
    status = ak("redis", "status", "--json", cwd=repo).json
    assert urls == {status["url"][:-2]}, "every worktree got the one Redis"
    port = status["url"].rsplit(":", 1)[1].split("/")[0]
    servers = [p for p in psutil.process_iter(["name", "cmdline"]) if "redis-server" in (p.info["name"] or "")
               and any(f":{port}" in part for part in p.info["cmdline"] or ())]
    assert [p.pid for p in servers] == [status["pid"]]
    assert len(ak("events", "--kind", "redis.started", "--json", cwd=repo).json["events"]) == 1


@pytest.mark.parametrize("point", ["worktree-new:allocated", "worktree-new:added"])
def test_kill_9_mid_new_is_repaired_by_up(repo, cli, point):
    assert cli("redis", "start").code == 0
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "worktree", "new", "k"], cwd=repo,
                            env={**os.environ, "AGENTKIT_FAILPOINT": point},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wt_path = repo.parent / "app-worktrees" / "k"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = cli("worktree", "list", "--json").json["worktrees"]
        if rows and (point.endswith("allocated") or wt_path.is_dir()):
            break
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    listed = cli("worktree", "list", "--json").json["worktrees"]
    assert [(w["slug"], w["status"]) for w in listed] == [("k", "incomplete")]
    assert cli("worktree", "new", "k", "--json").code == ExitCode.CONFLICT
    up = cli("worktree", "up", "k", "--json")
    assert up.code == 0, up.err
    assert up.json["status"] == "active" and up.json["redis_db"] == 1
    assert Path(up.json["env_file"]).is_file() and wt_path.is_dir()
    assert [w["status"] for w in cli("worktree", "list", "--json").json["worktrees"]] == ["active"]
    assert cli("worktree", "remove", "k").code == 0


def test_kill_9_mid_new_is_cleared_by_cleanup(repo, cli):
    assert cli("redis", "start").code == 0
    proc = subprocess.Popen([sys.executable, "-m", "agentkit.cli", "worktree", "new", "k"], cwd=repo,
                            env={**os.environ, "AGENTKIT_FAILPOINT": "worktree-new:added"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wt_path = repo.parent / "app-worktrees" / "k"
    deadline = time.monotonic() + 30
    while not wt_path.is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.kill()
    proc.wait()
    res = cli("worktree", "cleanup", "--yes", "--json")
    assert res.code == 0, res.err
    assert [r["slug"] for r in res.json["removed"]] == ["k"]
    assert not wt_path.exists() and cli("scale", "status", "--json").json["used"] == 0


def test_up_is_idempotent_and_repairs_the_env_file(repo, cli):
    wt = cli("worktree", "new", "a", "--json").json
    Path(wt["env_file"]).unlink()
    up = cli("worktree", "up", "a", "--json").json
    assert up["redis_db"] == wt["redis_db"] and "env_file" in up["repaired"]
    assert Path(wt["env_file"]).is_file()
    again = cli("worktree", "up", "a", "--json").json
    assert again["repaired"] == [] and again["redis_db"] == wt["redis_db"]


def test_up_recreates_a_missing_folder(repo, cli):
    wt = cli("worktree", "new", "a", "--json").json
    subprocess.run(["rm", "-rf", wt["path"]], check=True)
    assert cli("worktree", "list", "--json").json["worktrees"][0]["status"] == "missing"
    up = cli("worktree", "up", "a", "--json")
    assert up.code == 0, up.err
    assert "worktree" in up.json["repaired"] and Path(wt["path"]).is_dir()


def test_unmanaged_worktree_is_listed_and_adopted_by_up(repo, cli):
    other = repo.parent / "app-worktrees" / "handmade"
    git(repo, "worktree", "add", "-q", "-b", "agent/handmade", str(other))
    listed = cli("worktree", "list", "--json").json["worktrees"]
    assert [(w["slug"], w["status"]) for w in listed] == [("handmade", "unmanaged")]
    up = cli("worktree", "up", "handmade", "--json")
    assert up.code == 0, up.err
    assert up.json["redis_db"] == 1 and "allocation" in up.json["repaired"]
    assert cli("worktree", "list", "--json").json["worktrees"][0]["status"] == "active"


def test_merged_worktrees_are_cleaned_up_but_never_uncommitted_work(repo, cli):
    merged = cli("worktree", "new", "done", "--json").json
    (Path(merged["path"]) / "feature.txt").write_text("ok\n")
    git(Path(merged["path"]), "add", "feature.txt")
    git(Path(merged["path"]), "commit", "-qm", "feature")
    git(repo, "merge", "-q", "--ff-only", "agent/done")
    dirty = cli("worktree", "new", "dirty", "--json").json
    (Path(dirty["path"]) / "other.txt").write_text("ok\n")
    git(Path(dirty["path"]), "add", "other.txt")
    git(Path(dirty["path"]), "commit", "-qm", "other feature")
    git(repo, "merge", "-q", "--ff-only", "agent/dirty")
    (Path(dirty["path"]) / "scratch.txt").write_text("not committed\n")
    fresh = cli("worktree", "new", "fresh", "--json").json
    statuses = {w["slug"]: w["status"] for w in cli("worktree", "list", "--json").json["worktrees"]}
    assert statuses == {"done": "merged", "dirty": "merged", "fresh": "active"}

    refused = cli("worktree", "cleanup", "--json")
    assert refused.code == ExitCode.USAGE and "--yes" in refused.err
    dry = cli("worktree", "cleanup", "--dry-run", "--json").json
    assert [r["slug"] for r in dry["removed"]] == ["done"] and Path(merged["path"]).is_dir()
    res = cli("worktree", "cleanup", "--yes", "--json")
    assert res.code == 0
    assert [r["slug"] for r in res.json["removed"]] == ["done"]
    assert [s["slug"] for s in res.json["skipped"]] == ["dirty"]
    assert not Path(merged["path"]).exists()
    assert Path(dirty["path"]).is_dir() and Path(fresh["path"]).is_dir()


def test_state_is_found_from_inside_a_linked_worktree(repo, cli):
    wt = cli("worktree", "new", "a", "--json").json
    res = ak("worktree", "list", "--json", cwd=Path(wt["path"]))
    assert [w["slug"] for w in res.json["worktrees"]] == ["a"]
    assert not (Path(wt["path"]) / ".agents").exists()


def test_plan_changes_nothing(repo, cli):
    res = cli("worktree", "plan", "a", "--json")
    assert res.code == 0
    assert res.json["redis_db"] == 1 and res.json["branch"] == "agent/a" and not res.json["band_grows"]
    assert not Path(res.json["path"]).exists()
    assert cli("worktree", "list", "--json").json["worktrees"] == []


def test_agent_worktree_script_has_scale_beside_worktree_commands(repo):
    script = Path(sys.executable).parent / "agent-worktree"
    done = subprocess.run([str(script), "new", "a", "--json"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    status = subprocess.run([str(script), "scale", "status", "--json"], cwd=repo, capture_output=True, text=True)
    assert json.loads(status.stdout)["used"] == 1
    shim = Path(__file__).resolve().parents[1] / "bin" / "agent-worktree"
    listed = subprocess.run([str(shim), "list", "--json"], cwd=repo, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{script.parent}:{os.environ['PATH']}"})
    assert [w["slug"] for w in json.loads(listed.stdout)["worktrees"]] == ["a"]


def test_remove_never_deletes_a_branch_agentkit_did_not_make(repo, cli):
    git(repo, "branch", "feature-x")
    other = repo.parent / "scratch"
    git(repo, "worktree", "add", "-q", str(other), "feature-x")
    (other / "fix.txt").write_text("fix\n")
    git(other, "add", "fix.txt")
    git(other, "commit", "-qm", "unmerged work")
    git(repo, "worktree", "remove", str(other))
    assert cli("worktree", "new", "fx", "--base", "feature-x", "--branch", "feature-x").code == 0
    res = cli("worktree", "remove", "fx", "--json")
    assert res.code == 0 and res.json["delete_branch"] is False
    assert git(repo, "rev-parse", "--verify", "feature-x") != ""

    hand = repo.parent / "app-worktrees" / "hotfix"
    git(repo, "worktree", "add", "-q", "-b", "release-1.2", str(hand))
    (hand / "hotfix.txt").write_text("x\n")
    git(hand, "add", "hotfix.txt")
    git(hand, "commit", "-qm", "hotfix")
    assert cli("worktree", "up", "hotfix").code == 0
    res = cli("worktree", "remove", "hotfix", "--json")
    assert res.code == 0 and res.json["delete_branch"] is False
    assert "hotfix" in git(repo, "log", "-1", "--format=%s", "release-1.2")


def test_remove_refuses_a_worktree_a_job_runs_in(repo, cli):
    wt = cli("worktree", "new", "busy", "--json").json
    rclient(wt["redis_url"]).set("live", "1")
    job = cli("spawn", "--worktree", "busy", "--json", "--", "sleep", "30").json
    res = cli("worktree", "remove", "busy", "--json")
    assert res.code == ExitCode.CONFLICT and f"job(s) [{job['job_id']}]" in res.json["error"]["message"]
    assert rclient(wt["redis_url"]).get("live") == "1" and Path(wt["path"]).is_dir()
    assert cli("jobs", "kill", str(job["job_id"]), "--grace", "1").code == 0
    assert cli("jobs", "wait", str(job["job_id"])).code == 143


def test_a_failed_git_remove_leaves_redis_data_alone(repo, cli):
    wt = cli("worktree", "new", "locked", "--json").json
    rclient(wt["redis_url"]).set("important", "1")
    git(repo, "worktree", "lock", wt["path"])
    res = cli("worktree", "remove", "locked", "--json")
    assert res.code == ExitCode.FAILED
    assert rclient(wt["redis_url"]).get("important") == "1", "nothing was flushed"
    assert cli("worktree", "list", "--json").json["worktrees"][0]["status"] == "active"


def test_cleanup_stale_needs_at_least_a_day(repo, cli):
    cli("worktree", "new", "fresh")
    res = cli("worktree", "cleanup", "--stale", "0", "--dry-run", "--json")
    assert res.code == ExitCode.USAGE


def test_recycle_moves_a_clean_worktree_to_the_next_task_keeping_its_slot(repo, cli):
    from agentkit import worktrees
    from agentkit.repo import Repo

    old = cli("worktree", "new", "task-1-a", "--json").json
    (Path(old["path"]) / "a.txt").write_text("a\n")
    git(Path(old["path"]), "add", "a.txt")
    git(Path(old["path"]), "commit", "-qm", "a")
    r = Repo(repo)
    base = git(repo, "rev-parse", "HEAD")
    from agentkit import redis

    redis.client(old["redis_url"]).set("left", "over")
    new = worktrees.recycle(r, "task-1-a", "task-2-b", base)
    assert new["slug"] == "task-2-b" and new["redis_db"] == old["redis_db"] and new["ports"] == old["ports"]
    assert Path(new["path"]).is_dir() and not Path(old["path"]).exists()
    assert git(Path(new["path"]), "rev-parse", "--abbrev-ref", "HEAD") == "agent/task-2-b"
    assert git(Path(new["path"]), "rev-parse", "HEAD") == base and not (Path(new["path"]) / "a.txt").exists()
    assert git(repo, "rev-parse", "agent/task-1-a") != base, "the old task's branch and its commit are kept"
    assert redis.client(new["redis_url"]).dbsize() == 0, "its slot was flushed"
    assert "AGENTKIT_SLUG=task-2-b" in Path(new["env_file"]).read_text()
    listed = {w["slug"]: w for w in cli("worktree", "list", "--json").json["worktrees"]}
    assert set(listed) == {"task-2-b"} and listed["task-2-b"]["status"] == "active"
    (Path(new["path"]) / "wip.txt").write_text("not committed\n")
    from agentkit.errors import AgentkitError

    try:
        worktrees.recycle(r, "task-2-b", "task-3-c", base)
        raise AssertionError("a dirty worktree must not be recycled")
    except AgentkitError as exc:
        assert exc.code == 7 and "uncommitted" in exc.message
    assert (Path(new["path"]) / "wip.txt").exists()
    r.close()
