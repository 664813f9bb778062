"""The command contract: JSON shapes, exit codes, lazy imports, plugins, snapshot, docs that match the code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentkit import hookspecs
from agentkit.errors import ExitCode
from tests.conftest import write_plugin

DOCS = Path(__file__).resolve().parents[1] / "docs"
HEAVY = ("redis", "rich", "sqlite_utils", "psutil", "yaml")


def imported_modules(repo: Path, *args: str) -> set[str]:
    code = ("import atexit, sys, runpy; sys.argv = ['agentkit', *sys.argv[1:]]\n"
            "atexit.register(lambda: print('\\n'.join(sys.modules), file=sys.stderr))\n"
            "runpy.run_module('agentkit.cli', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=repo, capture_output=True, text=True)
    return set(done.stderr.split())


@pytest.mark.parametrize("args", [("snapshot", "--json"), ("worktree", "list", "--json"), ("plugins", "--json")])
def test_read_only_commands_do_not_import_heavy_modules(repo, cli, args):
    assert cli("worktree", "new", "a").code == 0  # state, a worktree and a running Redis exist
    loaded = imported_modules(repo, *args)
    assert "agentkit.cli" in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_snapshot_document(repo, cli):
    cli("worktree", "new", "a")
    snap = cli("snapshot", "--json").json
    assert snap["schema_version"] == 1 and snap["repo"] == str(repo)
    assert [w["slug"] for w in snap["worktrees"]] == ["a"]
    assert {"floor", "step", "current", "used", "free", "physical_max"} <= set(snap["capacity"])
    assert snap["capacity"]["used"] == 1 and snap["capacity"]["physical_max"] == 64
    assert snap["redis"]["managed"] is True and snap["redis"]["running"] is True
    cli("redis", "stop")
    assert cli("snapshot", "--json").json["redis"]["running"] is False


def test_json_error_object_and_stderr_message(repo, cli):
    res = cli("worktree", "remove", "ghost", "--json")
    assert res.code == ExitCode.NOT_FOUND
    assert set(res.json["error"]) == {"code", "name", "message", "hint"}
    assert res.json["error"]["code"] == 6 and res.json["error"]["name"] == "not_found"
    assert res.err.startswith("error: unknown worktree")
    human = cli("worktree", "remove", "ghost")
    assert human.out == "" and "hint:" in human.err


def test_an_unforeseen_failure_is_an_error_not_a_traceback(repo, cli, tmp_path):
    """A plugin's hook that raises (here: while `worktree new` builds the env file) fails the command with
    exit 1 and a message; the traceback only with AGENTKIT_DEBUG=1. The half-made worktree is rolled back."""
    env = write_plugin(tmp_path, "broken_env", "from agentkit.hookspecs import hookimpl\n\n"
                       "@hookimpl\ndef worktree_env(worktree, config):\n    return {}['boom']\n")
    res = cli("worktree", "new", "a", "--json", env=env)
    assert res.code == ExitCode.FAILED
    assert res.json["error"]["message"] == "internal error: KeyError: 'boom'"
    assert "AGENTKIT_DEBUG=1" in res.json["error"]["hint"]
    assert "Traceback" not in res.err
    assert cli("worktree", "list", "--json").json["worktrees"] == []
    shown = cli("worktree", "new", "a", env={**env, "AGENTKIT_DEBUG": "1"})
    assert shown.code == ExitCode.FAILED and "Traceback" in shown.err and "KeyError" in shown.err


def test_usage_errors_exit_2_and_minus_c(repo, tmp_path, cli):
    assert cli("worktree", "new").code == ExitCode.USAGE
    assert cli("scale", "--provision", "--target", "x").code == ExitCode.USAGE
    res = subprocess.run([sys.executable, "-m", "agentkit.cli", "-C", str(repo), "worktree", "list", "--json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and '"worktrees": []' in res.stdout
    res = subprocess.run([sys.executable, "-m", "agentkit.cli", "-C", str(tmp_path / "nope"), "snapshot"],
                         capture_output=True, text=True)
    assert res.returncode == ExitCode.USAGE and "cannot change to" in res.stderr and res.stdout == ""
    res = subprocess.run([sys.executable, "-m", "agentkit.cli", "-C", str(tmp_path / "nope"), "snapshot", "--json"],
                         capture_output=True, text=True)
    assert res.returncode == ExitCode.USAGE and "cannot change to" in json.loads(res.stdout)["error"]["message"]


def test_click_usage_errors_keep_their_box_and_add_the_json_error(cli):
    """A bad option value is click's usage error: the usage box on stderr as ever, and with --json also the
    error object on stdout, as for every other failure."""
    human = cli("task", "show", "abc")
    assert human.code == ExitCode.USAGE and human.out == "" and "Usage:" in human.err
    res = cli("task", "show", "abc", "--json")
    assert res.code == ExitCode.USAGE and "Usage:" in res.err
    assert res.json["error"]["name"] == "usage" and "'abc' is not a valid int" in res.json["error"]["message"]
    assert "task show --help" in res.json["error"]["hint"]


def test_plugins_lists_builtins_with_their_hooks(repo, cli):
    listed = {p["name"]: p for p in cli("plugins", "--json").json["plugins"]}
    assert listed["agentkit.builtin.band"] == {"name": "agentkit.builtin.band", "builtin": True,
                                               "hooks": ["band_target"]}
    assert listed["agentkit.builtin.provisioners"]["hooks"] == ["register_provisioners"]


def test_plugin_adds_a_command_and_a_snapshot_section(repo, cli, tmp_path):
    env = write_plugin(
        tmp_path, "hello_plugin",
        "from agentkit.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef register_commands(app):\n"
        "    @app.command('hello')\n    def hello():\n        print('hello from a plugin')\n\n"
        "@hookimpl\ndef snapshot_sections(repo):\n    return {'hello': {'ok': True}}\n\n"
        "@hookimpl\ndef worktree_env(worktree, config):\n    return {'EXTRA': worktree['slug'].upper()}\n")
    assert cli("hello", env=env).out.strip() == "hello from a plugin"
    assert cli("snapshot", "--json", env=env).json["hello"] == {"ok": True}
    wt = cli("worktree", "new", "a", "--json", env=env).json
    assert "EXTRA=A" in Path(wt["env_file"]).read_text().splitlines()
    assert cli("hello", env={"AGENTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}).code == ExitCode.USAGE


def test_unknown_plugin_name_is_a_usage_error(repo, cli):
    res = cli("plugins", "--json", env={"AGENTKIT_PLUGINS": "no_such_plugin_xyz"})
    assert res.code == ExitCode.USAGE and "no_such_plugin_xyz" in res.json["error"]["message"]
    # also where no plugin is ever loaded: built-ins that skip the plugin manager, and the agent-worktree script
    assert cli("version", env={"AGENTKIT_PLUGINS": "no_such_plugin_xyz"}).code == ExitCode.USAGE
    script = Path(sys.executable).parent / "agent-worktree"
    done = subprocess.run([str(script), "list", "--json"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "AGENTKIT_PLUGINS": "no_such_plugin_xyz"})
    assert done.returncode == ExitCode.USAGE and "no_such_plugin_xyz" in json.loads(done.stdout)["error"]["message"]


def test_every_hook_is_documented():
    text = (DOCS / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "agentkit_spec")]
    assert hooks, "hookspecs found"
    missing = [h for h in hooks if f"### {h}" not in text]
    assert not missing, f"docs/plugins.md lacks a section for: {missing}"


def test_every_exit_code_is_documented():
    text = (DOCS / "exit-codes.md").read_text()
    missing = [c.name for c in ExitCode if f"| {int(c)} " not in text]
    assert not missing, f"docs/exit-codes.md lacks: {missing}"
