"""docs/recipes.md: each recipe copied out of the page and run against a real repo, Redis and a fake agent."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentkit import docs

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
BIN = Path(sys.executable).parent  # agentkit and a python3 that can import it
needs_jq = pytest.mark.skipif(shutil.which("jq") is None,
                              reason="jq is not installed (apt-get install -y jq): the recipe is written for it")

# The fake agent: commits a file naming its task; fails for the tasks listed in FAIL_TASKS.
AGENT = """#!/bin/sh
case " $FAIL_TASKS " in *" $AGENTKIT_TASK_ID "*) echo "task $AGENTKIT_TASK_ID: failing" >&2; exit 3 ;; esac
echo "done by $AGENTKIT_SLUG" > "done-$AGENTKIT_TASK_ID.txt"
git add "done-$AGENTKIT_TASK_ID.txt" && git commit -qm "task $AGENTKIT_TASK_ID"
"""


def recipe(name: str) -> str:
    """The fenced block that follows `<!-- recipe: NAME -->` in docs/recipes.md."""
    found = re.search(rf"^<!-- recipe: {name} -->\n```\w*\n(.*?)^```$", RECIPES.read_text(), re.M | re.S)
    assert found, f"docs/recipes.md has no block marked <!-- recipe: {name} -->"
    return found.group(1)


@pytest.fixture
def graph(repo, cli, tmp_path):
    """Four tasks (b depends on a), the fake agent, and the env a user's shell would have."""
    for args in (["a"], ["b", "--dep", "1"], ["c"], ["d"]):
        assert cli("task", "add", *args).code == 0
    agent = tmp_path / "agent.sh"
    agent.write_text(AGENT)
    agent.chmod(0o755)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "FAIL_TASKS": ""}
    return agent, env


def _outcomes(cli) -> dict[int, list]:
    released = [e for e in cli("events", "--json", "--limit", "1000").json["events"] if e["kind"] == "claim.released"]
    out: dict[int, list] = {}
    for event in released:
        out.setdefault(event["data"]["task_id"], []).append(event["data"]["outcome"])
    return out


def _tasks(cli) -> dict[str, dict]:
    return {t["name"]: t for t in cli("task", "list", "--json").json["tasks"]}


def _done_files(repo: Path) -> set[str]:
    return {p.name for p in repo.parent.glob(f"{repo.name}-worktrees/*/done-*.txt")}


def test_makefile_recipe_runs_every_task_with_make_j4(repo, cli, graph):
    agent, env = graph
    (repo / "Makefile.agents").write_text(recipe("makefile"))
    done = subprocess.run(["make", "-f", "Makefile.agents", "-j4", "agents", f"AGENT={agent}", "LEASE=10m"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {t["status"] for t in _tasks(cli).values()} == {"passing"}
    assert _outcomes(cli) == {1: ["pass"], 2: ["pass"], 3: ["pass"], 4: ["pass"]}
    assert _done_files(repo) == {"done-1.txt", "done-2.txt", "done-3.txt", "done-4.txt"}
    assert all(t["reason"] == "agent exited 0" for t in _tasks(cli).values())
    assert "nothing left to claim" in done.stdout

    # a task whose agent keeps failing: released `fail` until it is dead, and `make agents` fails
    assert cli("task", "add", "e").code == 0
    done = subprocess.run(["make", "-f", "Makefile.agents", "-j2", "agents", f"AGENT={agent}", "SLOTS=1 2"],
                          cwd=repo, env={**env, "FAIL_TASKS": "5"}, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "'dead': 1" in done.stdout
    assert _tasks(cli)["e"]["status"] == "dead" and _outcomes(cli)[5] == ["fail"] * 3


@needs_jq
def test_shell_loop_recipe_two_loops_in_parallel(repo, cli, graph, tmp_path):
    agent, env = graph
    script = tmp_path / "agents.sh"
    script.write_text(recipe("shell"))
    env = {**env, "FAIL_TASKS": "4", "LEASE": "10m"}
    loops = [subprocess.Popen(["sh", str(script), name, str(agent)], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("s1", "s2")]
    results = [(p.wait(300), *p.communicate()) for p in loops]
    assert [code for code, _, _ in results] == [1, 1], results  # d ended dead: each loop says so with exit 1
    tasks = _tasks(cli)
    assert [tasks[n]["status"] for n in "abcd"] == ["passing", "passing", "passing", "dead"]
    assert _outcomes(cli) == {1: ["pass"], 2: ["pass"], 3: ["pass"], 4: ["fail", "fail", "fail"]}
    assert _done_files(repo) == {"done-1.txt", "done-2.txt", "done-3.txt"}
    out = "".join(o for _, o, _ in results)
    assert "task 2 pass" in out and "task 4 fail" in out and '"dead":1' in out


@needs_jq
def test_ci_recipe_fails_on_stale_docs_and_dead_tasks(repo, cli, graph, tmp_path):
    _, env = graph
    script = tmp_path / "ci-check.sh"
    script.write_text(recipe("ci"))

    def ci():
        return subprocess.run(["sh", str(script)], cwd=repo, env=env, capture_output=True, text=True, timeout=120)

    done = ci()
    assert done.returncode == 1 and "AGENTS.md is out of date" in done.stderr, "no AGENTS.md yet"
    assert cli("install-docs").code == 0
    (repo / "AGENTS.md").write_text((repo / "AGENTS.md").read_text() + "\nOur own notes stay.\n")
    assert (repo / "AGENTS.md").read_text() == docs.render((repo / "AGENTS.md").read_text())

    for task_id in ("1", "2", "3", "4"):
        claim = cli("claim", task_id, "--agent", "ci", "--json").json
        assert cli("release", claim["claim_id"], "--outcome", "pass").code == 0
    done = ci()
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"passing":4' in done.stdout

    assert cli("task", "add", "e", "--json").code == 0
    for _ in range(3):
        claim = cli("claim", "--agent", "ci", "--json").json
        assert cli("release", claim["claim_id"], "--outcome", "fail").code == 0
    done = ci()
    assert done.returncode == 1 and "tasks dead or stuck" in done.stderr
