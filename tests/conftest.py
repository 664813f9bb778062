"""Fixtures: real git repositories in tmp dirs and real redis-servers (free ports, never 6379)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkit import plugins
from agentkit.redis import binary as redis_binary

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def pytest_addoption(parser):
    parser.addoption("--chaos-long", action="store_true", default=False,
                     help="run the kill -9 chaos tests for hundreds of iterations instead of a few")


@pytest.fixture
def chaos_rounds(request):
    """How many kill -9 rounds a chaos test runs: a few by default, hundreds with --chaos-long."""
    return lambda few, many=300: many if request.config.getoption("--chaos-long") else few


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AGENTKIT_") or key.startswith("GIT_"):
            monkeypatch.delenv(key)
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)
    plugins.reset()
    yield
    plugins.reset()


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _stop_managed(root: Path) -> None:
    pidfile = root / ".agents" / "redis" / "redis.pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with one commit on `main`; its managed Redis is killed afterwards."""
    root = tmp_path / "app"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("sample\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "init")
    yield root
    _stop_managed(root)


def wait_until(predicate, timeout: float = 20.0):
    """Poll `predicate` until it returns something true (and return that), or fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    url: str
    port: int
    conf: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([redis_binary(), str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_redis(folder: Path, databases: int = 64, extra: str = "") -> RedisServer:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport {port}\ndatabases {databases}\ndir \"{folder}\"\n"
                    f"save 3600 1\npidfile \"{folder / 'redis.pid'}\"\n{extra}")
    server = RedisServer(f"redis://127.0.0.1:{port}/0", port, conf)
    server.start()
    return server


@pytest.fixture
def external_redis(tmp_path):
    """A redis-server of our own on a free port (not managed by agentkit), for the external-URL paths."""
    server = start_redis(tmp_path / "ext-redis")
    yield server
    server.stop()


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def ak(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> Result:
    """Run the real CLI in a subprocess, as a script would."""
    done = subprocess.run([sys.executable, "-m", "agentkit.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(repo):
    def run(*args: str, **kw) -> Result:
        kw.setdefault("cwd", repo)
        return ak(*args, **kw)
    return run


def write_plugin(tmp_path: Path, name: str, source: str) -> dict:
    """Write a plugin module under tmp_path/plugs and return the env that loads it (AGENTKIT_PLUGINS)."""
    folder = tmp_path / "plugs"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    return {"PYTHONPATH": str(folder), "AGENTKIT_PLUGINS": name}
