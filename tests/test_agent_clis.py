"""The real agent CLIs behind the built-in presets: every flag a preset passes is in its CLI's --help, and a run with
no credentials is read as "login", or waits for a network it does not have until its timeout ends it.

Opt-in (it installs ~700 MB from the package registries once): AGENTKIT_TEST_AGENT_CLIS=1. The CLIs are installed
into ~/.cache/agentkit-tests/agent-clis (AGENTKIT_AGENT_CLIS_DIR moves it) and reused from there; each one that
cannot be installed is skipped with the reason. Each run prints what the CLI did (pytest -rP shows it).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkit import plugins, presets

pytestmark = [pytest.mark.agent_clis,
              pytest.mark.skipif(os.environ.get("AGENTKIT_TEST_AGENT_CLIS") != "1",
                                 reason="real agent CLIs: set AGENTKIT_TEST_AGENT_CLIS=1 (installs them from the "
                                        "package registries once)")]

# Read at import, before the autouse fixtures point HOME at a tmp dir and drop AGENTKIT_* variables.
INSTALL_ENV = dict(os.environ)  # the real HOME: npm's and pip's caches are reused
CACHE = Path(os.environ.get("AGENTKIT_AGENT_CLIS_DIR") or Path.home() / ".cache" / "agentkit-tests" / "agent-clis")
NPM = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "gemini": "@google/gemini-cli"}
PIP = {"aider": "aider-chat"}
HELP = {"codex": ["exec", "--help"]}  # the preset runs `codex exec`, whose flags are its own
INSTALL_TIMEOUT = {"aider": 180}  # aider-chat pulls litellm and tree-sitter grammars: give up after 3 minutes
# Credentials an agent could find in the environment; the runs below have none.
SECRET = re.compile(r"API_KEY|TOKEN|SECRET|^(ANTHROPIC|OPENAI|GEMINI|GOOGLE|CLAUDE|CODEX|AIDER|VERTEX)_", re.I)


@dataclass
class Ran:
    code: int | None  # None: still running at the timeout, then killed
    out: str
    seconds: float


def run(argv, timeout: float, **kw) -> Ran:
    """Run argv in its own process group, stdin closed as the orchestrator runs agents; at the timeout the whole
    group is killed and what it printed so far is kept."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    return Ran(code, out.decode(errors="replace"), time.monotonic() - start)


def _install(name: str) -> tuple[Path | None, str]:
    """(the folder holding the CLI's executable, "") or (None, why it cannot be had)."""
    folder = CACHE / name
    bin_dir = folder / "node_modules" / ".bin" if name in NPM else folder / "bin"
    if not (bin_dir / name).exists():
        shutil.rmtree(folder, ignore_errors=True)  # a half-done earlier install
        folder.parent.mkdir(parents=True, exist_ok=True)
        timeout = INSTALL_TIMEOUT.get(name, 300)
        if name in NPM:
            if shutil.which("npm") is None:
                return None, "npm is not installed"
            steps = [["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--loglevel=error",
                      "--fetch-timeout=30000", "--fetch-retries=1", NPM[name]]]
        else:
            steps = [[sys.executable, "-m", "venv", str(folder)],
                     [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "--timeout", "30", "--retries",
                      "1", PIP[name]]]
        for step in steps:
            done = run(step, timeout, env=INSTALL_ENV)
            if done.code != 0:
                shutil.rmtree(folder, ignore_errors=True)
                errors = [ln.strip() for ln in done.out.splitlines() if "error" in ln.lower() and "log of" not in ln]
                why = (f"did not finish within {timeout:.0f} s" if done.code is None
                       else f"failed (exit {done.code}): {' / '.join(errors[:3]) or done.out.strip()[-300:]}")
                return None, f"installing {NPM.get(name) or PIP[name]} {why}"
    version = run([str(bin_dir / name), "--version"], 60)
    if version.code != 0:
        return None, f"{name} --version exits {version.code}: {version.out.strip()[-300:]}"
    return bin_dir, version.out.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def cli():
    """cli(name) -> (bin dir, version), installing the CLI on first use; skips the test when it cannot be had."""
    found: dict = {}

    def get(name):
        if name not in found:
            found[name] = _install(name)
        where, said = found[name]
        if where is None:
            pytest.skip(said)
        return where, said

    return get


def preset(name):
    return presets.get(plugins.get_manager(), name)


def no_credentials(tmp_path: Path, bin_dir: Path) -> dict:
    home = tmp_path / "empty-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not SECRET.search(k) and not k.startswith("XDG_")}
    return env | {"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


AGENTS = ("claude", "codex", "gemini", "aider")


@pytest.mark.parametrize("name", AGENTS)
def test_every_flag_the_preset_passes_is_in_the_clis_help(name, cli, tmp_path):
    bin_dir, version = cli(name)
    helped = run([str(bin_dir / name), *HELP.get(name, ["--help"])], 60, env=no_credentials(tmp_path, bin_dir))
    assert helped.code == 0, helped.out
    values = {"task_id": "7", "task_name": "t", "prompt_file": str(tmp_path / "prompt.md"), "worktree": str(tmp_path),
              "claim_id": "c", "model": "some-model", "attempt": "1"}
    checked = set()
    for kind in presets.KINDS:
        argv = preset(name).command(kind, values)
        assert argv[0] == name
        for word, after in zip(argv[1:], argv[2:] + [""], strict=True):
            if not word.startswith("-"):
                continue
            flag = word.split("=")[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helped.out), f"{name} {version}: {flag}"
            checked.add(flag)
            # a literal choice (json, yolo, danger-full-access), not a value filled in from the task
            if after and not after.startswith("-") and not any(str(v) in after for v in values.values()):
                assert re.search(rf"(?<![\w-]){re.escape(after)}(?![\w-])", helped.out), f"{name}: {flag} {after}"
    assert "--model" in checked
    print(f"{name} {version}: in --help: {' '.join(sorted(checked))}")


@dataclass
class Case:
    name: str
    model: str
    may_hang: bool  # waits for the network (or a browser) rather than saying it is not logged in
    timeout: float


CASES = [
    Case("claude", "", False, 60),   # "Not logged in · Please run /login" as a JSON result, exit 1
    Case("gemini", "", False, 60),   # exit 41: "Please set an Auth method …"
    Case("codex", "", True, 20),     # retries its connection for ever: "Reconnecting... waiting for network"
    Case("aider", "", True, 20),     # no model and no key: offers OpenRouter's login in a browser, waits 5 minutes
    Case("aider", "sonnet", False, 60),  # litellm.AuthenticationError, exit 0
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{c.model or 'default'}")
def test_a_run_without_credentials_is_read_as_login_or_ended_by_its_timeout(case, cli, tmp_path):
    bin_dir, version = cli(case.name)
    worktree = tmp_path / "wt"
    worktree.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=worktree, check=True)
    (worktree / "README.md").write_text("# demo\n")
    subprocess.run(["git", "add", "."], cwd=worktree, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=worktree, check=True)
    prompt = worktree / ".agents" / "prompt.md"
    prompt.parent.mkdir()
    prompt.write_text("# Task 1: say hello\n\nCreate hello.txt containing `hello`, commit it.\n")
    values = {"task_id": "1", "task_name": "say hello", "prompt_file": str(prompt), "worktree": str(worktree),
              "claim_id": "c-1", "model": case.model, "attempt": "1"}
    agent = preset(case.name)
    argv = agent.command("coding", values)

    ran = run(argv, case.timeout, cwd=worktree, env=no_credentials(tmp_path, bin_dir))
    found = agent.classify(ran.code, ran.out[-8192:])
    said = next((ln.strip() for ln in reversed(ran.out.splitlines()) if ln.strip()), "")[:200]
    end = f"still running after {ran.seconds:.0f} s, killed" if ran.code is None else \
        f"exit {ran.code} after {ran.seconds:.1f} s"
    print(f"{case.name} {version} (model {case.model or 'default'}): {end}; classify: {found}; last line: {said}")

    if ran.code is None:
        assert case.may_hang, f"{case.name} hung for {case.timeout} s without saying it is not logged in:\n{ran.out}"
        if case.name == "aider":  # it said why it waits, before waiting
            assert found and found["kind"] == "login", ran.out
        else:
            assert found is None, "a hang for the network is not a login: the run's timeout ends it"
    else:
        assert found and found["kind"] == "login", f"exit {ran.code}:\n{ran.out}"
