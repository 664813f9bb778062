"""Docs that match the code: `agentkit install-docs`, and the generated references in docs/."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from agentkit import docs, hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_install_docs_creates_then_refreshes_keeping_user_text(repo, cli):
    res = cli("install-docs", "--json")
    assert res.code == 0 and res.json["written"] is True
    text = (repo / "AGENTS.md").read_text()
    assert docs.BEGIN in text and "REDIS_URL" in text
    assert cli("install-docs", "--check").code == 0, "up to date after install"

    (repo / "AGENTS.md").write_text("# Our rules\n\nRun make lint.\n\n" + text.replace("REDIS_URL", "OLD"))
    assert cli("install-docs", "--check").code == 1
    assert cli("install-docs", "--dry-run", "--json").json == {
        "schema_version": 1, "path": str(repo / "AGENTS.md"), "changed": True, "written": False}
    assert cli("install-docs").code == 0
    new = (repo / "AGENTS.md").read_text()
    assert new.startswith("# Our rules\n\nRun make lint.\n") and "OLD" not in new and new.count(docs.BEGIN) == 1


def test_bin_shim_and_console_script(repo):
    shim = Path(__file__).resolve().parents[1] / "bin" / "install-agent-docs"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert subprocess.run([str(shim)], cwd=repo, env=env, capture_output=True).returncode == 0
    assert (repo / "AGENTS.md").is_file()
    script = Path(sys.executable).parent / "install-agent-docs"
    done = subprocess.run([str(script), "--check"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_reference_is_current():
    from agentkit.cli.reference import render

    assert (DOCS / "cli.md").read_text() == render(), "regenerate: python -m agentkit.cli.reference > docs/cli.md"


def test_plugins_hook_reference_is_current():
    from agentkit.cli.hookref import render

    text = (DOCS / "plugins.md").read_text()
    assert text == render(text), "regenerate: python -m agentkit.cli.hookref (rewrites docs/plugins.md in place)"


def test_every_hook_has_a_section_and_every_section_is_a_hook():
    specs = [name for name, fn in vars(hookspecs).items() if hasattr(fn, "agentkit_spec")]
    sections = re.findall(r"^### (\S+)$", (DOCS / "plugins.md").read_text(), re.M)
    assert "band_target" in specs and "register_executors" in specs
    assert sorted(set(specs) - set(sections)) == [], "hooks without a section in docs/plugins.md"
    assert sorted(set(sections) - set(specs)) == [], "sections in docs/plugins.md that are not hooks"


def _reference_sections() -> dict[str, str]:
    """docs/cli.md's sections by command path (`agentkit worktree up`), each with its text."""
    parts = re.split(r"^## `(agentkit[^`]*)`$", (DOCS / "cli.md").read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_command_the_docs_tell_people_to_run_exists_with_its_options():
    """A recovery step that names a command or an option agentkit does not have is worse than none."""
    sections = _reference_sections()
    checked = 0
    for page in ("troubleshooting.md", "exit-codes.md", "orchestrator.md", "events.md"):
        text = (DOCS / page).read_text()
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
        commands = [ln.removeprefix("$ ") for b in blocks for ln in b.splitlines()]  # commands, not their output
        commands += re.findall(r"`([^`\n]+)`", text)  # inline code
        for line in (c.split("#")[0] for c in commands if c.startswith("agentkit ") and "…" not in c):
            words = line.split()
            path = next((" ".join(words[:n]) for n in (3, 2) if " ".join(words[:n]) in sections), None)
            assert path, f"{page}: `{line.strip()}` names no agentkit command"
            for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
                if option != "--help":
                    assert f"`{option}`" in sections[path], f"{page}: `{path}` has no option {option}"
            checked += 1
    assert checked > 20


def test_install_agent_docs_shares_the_command_line_boundary(repo):
    """The third console script checks what the other two check: an unknown AGENTKIT_PLUGINS name is exit 2."""
    script = Path(sys.executable).parent / "install-agent-docs"
    env = {**os.environ, "AGENTKIT_PLUGINS": "no_such_plugin_anywhere"}
    done = subprocess.run([str(script), "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "no_such_plugin_anywhere" in json.loads(done.stdout)["error"]["message"]
    assert not (repo / "AGENTS.md").exists() and "Traceback" not in done.stderr
