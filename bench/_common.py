"""Helpers shared by the benchmark scripts in this folder (not a benchmark itself).

The scripts run as `python bench/X.py`, which puts this folder on sys.path, so they import from here with
`from _common import ...`.
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The console script next to the running interpreter: the one of the venv agentkit is installed in.
AGENTKIT = Path(sys.executable).parent / "agentkit"
# The same CLI as a module of the running interpreter: the agentkit its sys.path finds, PYTHONPATH first (so a
# bench can be pointed at another checkout with PYTHONPATH=/that/checkout, subprocesses included).
AGENTKIT_CLI = [sys.executable, "-m", "agentkit.cli"]

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


# ---- environment ------------------------------------------------------------------------------------------

def drop_agentkit_env() -> None:
    """Remove every AGENTKIT_* variable from os.environ, so this process and its children measure the defaults,
    and PYTHONDONTWRITEBYTECODE, which some shells set: without .pyc files every run recompiles every module,
    which is not how people run agentkit."""
    for key in [k for k in os.environ if k.startswith("AGENTKIT_") or k == "PYTHONDONTWRITEBYTECODE"]:
        del os.environ[key]


def child_env() -> dict:
    """The environment for subprocesses: os.environ without AGENTKIT_*, the venv's bin first on PATH (so
    `agentkit` is the one under test) and a fixed git identity (commits work without any git config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTKIT_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_IDENTITY)
    return env


ENV = child_env()


def require_agentkit(advice: str = "run with the python of the venv agentkit is installed in") -> None:
    if not AGENTKIT.is_file():
        raise SystemExit(f"no agentkit console script at {AGENTKIT}; {advice}")


# ---- subprocesses and git fixtures ------------------------------------------------------------------------

def run(cmd: list, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run cmd in cwd with ENV, output captured as bytes; exit with its stderr if it fails."""
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, input=stdin, capture_output=True, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{done.stderr.decode(errors='replace').strip()}")
    return done


def timed(cmd: list, cwd: Path) -> float:
    """Seconds `run(cmd, cwd)` took, by time.perf_counter."""
    return timed_run(cmd, cwd)[0]


def timed_run(cmd: list, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """`run(cmd, cwd)` and the seconds it took (time.perf_counter), for a timed command whose output is checked."""
    start = time.perf_counter()
    done = run(cmd, cwd)
    return time.perf_counter() - start, done


def git_init(path: Path, branch: str | None = None) -> None:
    """Make `path` (and missing parents) and `git init` it, on `branch` if given (else git's default)."""
    path.mkdir(parents=True)
    run(["git", "init", "-q", *(["-b", branch] if branch else [])], path)


def empty_repo(path: Path) -> None:
    """A new git repo at `path` with one empty commit."""
    git_init(path)
    run(["git", "commit", "-q", "--allow-empty", "-m", "init"], path)


def files_repo(path: Path, files: int) -> None:
    """A new git repo at `path`: `files` small files in 10 x 10 nested folders, one commit on main (written with
    `git fast-import`), checked out."""
    git_init(path, branch="main")
    per_dir = max(1, math.ceil(files / 100))
    chunks = [b"commit refs/heads/main\ncommitter bench <bench@example.com> 1700000000 +0000\n",
              f"data {len(f'{files}-file fixture')}\n{files}-file fixture\n".encode()]
    for i in range(files):
        top, sub, n = i // (per_dir * 10), (i // per_dir) % 10, i % per_dir
        body = f"# file {i}\nvalue = {i * 7919 % 100003}\n".encode()
        chunks.append(f"M 100644 inline pkg{top:02d}/mod{sub:02d}/f{n:04d}.py\ndata {len(body)}\n".encode()
                      + body + b"\n")
    chunks.append(b"done\n")
    run(["git", "fast-import", "--quiet", "--done"], path, stdin=b"".join(chunks))
    run(["git", "reset", "-q", "--hard", "main"], path)
    count = len(run(["git", "ls-files"], path).stdout.splitlines())
    if count != files:
        raise SystemExit(f"fixture has {count} files, expected {files}")


# ---- temp dirs and managed Redis ----------------------------------------------------------------------------

def default_dir() -> Path | None:
    """/dev/shm (tmpfs) when it exists and is writable, else None (the system temp dir)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


@contextmanager
def temp_dir(prefix: str, keep: bool, parent: Path | None = None) -> Iterator[Path]:
    """A fresh temp dir under `parent`; removed on exit unless `keep` (then its path is printed)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def managed_redis(repo: Path, cli: list | None = None) -> Iterator[None]:
    """`agentkit redis start` in repo (not timed); `agentkit redis stop` on exit, whatever happened. `cli` is the
    command that runs agentkit (default the console script AGENTKIT; AGENTKIT_CLI for the module)."""
    cli = cli or [AGENTKIT]
    run([*cli, "redis", "start"], repo)
    try:
        yield
    finally:
        subprocess.run([str(c) for c in [*cli, "redis", "stop"]], cwd=repo, capture_output=True, env=ENV)


# ---- arguments ------------------------------------------------------------------------------------------

def add_rounds_args(parser: argparse.ArgumentParser, rounds: int) -> None:
    """--rounds (default `rounds`) and --warmup (default 1); check them with check_rounds."""
    parser.add_argument("--rounds", type=int, default=rounds, help=f"timed rounds (default {rounds})")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")


def check_rounds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")


def add_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=default_dir(),
                        help="where to make the temp dir (default /dev/shm if present, else the system temp dir)")


def add_keep_arg(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument("--keep", action="store_true", help="keep the temp dir" + (f" ({note})" if note else ""))


# ---- statistics and banners -----------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) of values by nearest rank; nan when there are none."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def machine() -> str:
    """'N CPUs, load average L, python V' for a report's first line."""
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}"
