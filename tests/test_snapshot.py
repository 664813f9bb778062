"""The snapshot contract: real documents validated against docs/snapshot.schema.json, plugin sections, versions."""

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from agentkit import snapshot as snapshot_mod
from agentkit.errors import AgentkitError, ExitCode
from agentkit.repo import Repo
from tests.conftest import write_plugin

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "snapshot.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def valid(doc: dict) -> dict:
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    return doc


def test_the_schema_is_a_draft_2020_12_schema_naming_the_core_sections():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["required"] == list(snapshot_mod.CORE_KEYS) == list(SCHEMA["properties"])
    assert SCHEMA["properties"]["schema_version"] == {"const": snapshot_mod.SCHEMA_VERSION}
    assert list(SCHEMA["patternProperties"]) == [f"^{snapshot_mod.SECTION_NAME.pattern}$"]


def test_an_empty_repo(repo, cli):
    snap = valid(cli("snapshot", "--json").json)
    assert snap["worktrees"] == [] and snap["jobs"]["active_jobs"] == [] and snap["warnings"] == []
    assert snap["redis"] == {"url": None, "managed": True, "running": False}
    assert snap["tasks"]["total"] == 0 and "diagnosis" not in snap["tasks"]


def test_worktrees_tasks_a_claim_a_job_and_the_band(repo, cli):
    assert cli("worktree", "new", "a").code == 0 and cli("worktree", "new", "b").code == 0
    for name in ("build", "ship"):
        assert cli("task", "add", name).code == 0
    assert cli("task", "dep", "add", "2", "1").code == 0
    assert cli("claim", "--agent", "bob", "--json").json["task_id"] == 1
    job = cli("spawn", "--json", "--", "sleep", "30").json
    try:
        snap = valid(cli("snapshot", "--json").json)
        assert [w["slug"] for w in snap["worktrees"]] == ["a", "b"]
        assert [w["redis_db"] for w in snap["worktrees"]] == [1, 2]
        assert snap["capacity"]["used"] == 2 and snap["capacity"]["physical_max"] == 64
        assert snap["redis"]["running"] is True
        stuck = {t["id"]: t for t in snap["tasks"]["diagnosis"]}  # nothing ready: task 1 held, 2 waits on it
        assert stuck[1]["claimed_by"]["agent"] == "bob" and [u["id"] for u in stuck[2]["unmet"]] == [1]
        assert [(j["job_id"], j["state"]) for j in snap["jobs"]["active_jobs"]] == [(job["job_id"], "running")]
        assert "token" not in snap["jobs"]["active_jobs"][0]
        git_only = Path(snap["worktrees"][0]["path"]).parent / "by-hand"  # git's, not agentkit's
        subprocess.run(["git", "worktree", "add", "-q", "-b", "by-hand", str(git_only)], cwd=repo, check=True)
        snap = valid(cli("snapshot", "--json").json)
        assert snap["worktrees"][-1]["status"] == "unmanaged" and snap["worktrees"][-1]["redis_db"] is None
    finally:
        cli("jobs", "kill", str(job["job_id"]), "--grace", "0.5")


PLUGIN = """from agentkit.hookspecs import hookimpl

@hookimpl
def snapshot_sections(repo):
    return {"acme_queue": {"depth": 3, "workers": ["w1"]}, "worktrees": "mine now", "Bad-Name": 1}
"""


def test_a_plugin_section_is_added_and_cannot_replace_a_core_one(repo, cli, tmp_path):
    env = write_plugin(tmp_path, "acme_snapshot", PLUGIN)
    snap = valid(cli("snapshot", "--json", env=env).json)
    assert snap["acme_queue"] == {"depth": 3, "workers": ["w1"]}
    assert snap["worktrees"] == [] and "Bad-Name" not in snap
    assert snap["warnings"] == [
        "plugin acme_snapshot: section 'worktrees' is a core section; left out",
        "plugin acme_snapshot: section 'Bad-Name' is not a section name (lowercase letters, digits and _, "
        "starting with a letter); left out"]
    human = cli("snapshot", env=env)
    assert human.code == 0 and "warning: plugin acme_snapshot: section 'worktrees'" in human.err


def test_schema_version_flag(repo, cli):
    assert cli("snapshot", "--schema-version", "1", "--json").json["schema_version"] == 1
    for bad in ("2", "0"):
        res = cli("snapshot", "--schema-version", bad, "--json")
        assert res.code == ExitCode.USAGE
        assert res.json["error"]["message"] == (f"snapshot schema version {bad} is not supported "
                                                "(this agentkit serves: 1)")
        assert "Traceback" not in res.err
    assert cli("snapshot", "--schema-version", "x").code == ExitCode.USAGE


def test_an_older_shape_is_one_function(repo, monkeypatch):
    """What a breaking change adds: the previous version's shape, built from the current document."""
    monkeypatch.setattr(snapshot_mod, "_OLDER", {0: lambda doc: {"repo": doc["repo"], "slugs": []}})
    handle = Repo(repo)
    try:
        assert snapshot_mod.supported_versions() == [0, 1]
        assert snapshot_mod.snapshot(handle, 0) == {"repo": str(repo), "slugs": [], "schema_version": 0}
        assert valid(snapshot_mod.snapshot(handle))["schema_version"] == 1
        with pytest.raises(AgentkitError, match="serves: 0, 1"):
            snapshot_mod.snapshot(handle, 7)
    finally:
        handle.close()
