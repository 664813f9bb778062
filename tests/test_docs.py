"""`agentkit install-docs`: AGENTS.md gets agentkit's section; the user's own text is kept."""

import os
import subprocess
import sys
from pathlib import Path

from agentkit import docs


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
