"""The managed redis-server and provisioning the physical ceiling (managed and `command` provisioners)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_py

from agentkit.errors import ExitCode
from tests.conftest import start_redis


def run_id(url: str) -> str:
    return redis_py.Redis.from_url(url).info("server")["run_id"]


def test_managed_redis_start_status_stop_keeps_keys(repo, cli):
    started = cli("redis", "start", "--json")
    assert started.code == 0, started.err
    st = started.json
    assert st["managed"] and st["running"] and st["databases"] == 64 and st["pid"] > 0
    assert st["url"].startswith("redis://127.0.0.1:") and not st["url"].endswith(":6379/0")
    assert (repo / ".agents" / "redis" / "redis.conf").is_file()
    redis_py.Redis.from_url(st["url"].replace("/0", "/5")).set("k", "v")
    assert cli("redis", "start", "--json").json["pid"] == st["pid"], "start is a no-op when running"
    stopped = cli("redis", "stop", "--json").json
    assert stopped["running"] is False and stopped["pid"] is None
    again = cli("redis", "start", "--json").json
    assert again["url"] == st["url"], "the same port again"
    assert redis_py.Redis.from_url(again["url"].replace("/0", "/5")).get("k") == b"v", "RDB save on shutdown"


def test_first_start_uses_the_databases_setting(repo, cli):
    res = cli("redis", "start", "--json", env={"AGENTKIT_REDIS_DATABASES": "16"})
    assert res.json["databases"] == 16


def test_provision_restarts_once_keeps_keys_and_is_idempotent(repo, cli):
    env = {"AGENTKIT_REDIS_DATABASES": "16"}
    wt = cli("worktree", "new", "a", "--json", env=env).json
    redis_py.Redis.from_url(wt["redis_url"]).set("survivor", "yes")
    before = run_id(wt["redis_url"])
    assert cli("scale", "status", "--json").json["physical_max"] == 16

    res = cli("scale", "--provision", "--target", "64", "--yes", "--json", env=env)
    assert res.code == 0, res.err
    assert res.json["restarted"] is True and res.json["previous"] == 16 and res.json["databases"] == 64
    assert "restarted Redis once" in res.err
    after = run_id(wt["redis_url"])
    assert after != before
    assert redis_py.Redis.from_url(wt["redis_url"]).get("survivor") == b"yes"
    status = cli("scale", "status", "--json").json
    assert status["physical_max"] == 64 and status["ceiling"] == 63

    again = cli("scale", "--provision", "--target", "64", "--yes", "--json", env=env)
    assert again.code == 0 and again.json["restarted"] is False
    assert "already provisioned" in again.err
    assert run_id(wt["redis_url"]) == after, "a second run restarts nothing"
    kinds = [e["kind"] for e in cli("events", "--json").json["events"]]
    assert kinds.count("redis.provisioned") == 1
    assert cli("worktree", "new", "b", "--json").json["redis_db"] == 2, "allocation works after the restart"


def test_provision_default_target_is_64(repo, cli):
    cli("redis", "start", env={"AGENTKIT_REDIS_DATABASES": "32"})
    res = cli("scale", "--provision", "--yes", "--json")
    assert res.code == 0 and res.json["databases"] == 64


def test_provision_refuses_lowering_and_needs_yes_without_a_tty(repo, cli):
    assert cli("redis", "start", "--json", env={"AGENTKIT_REDIS_DATABASES": "32"}).code == 0
    pid = cli("redis", "status", "--json").json["pid"]
    lower = cli("scale", "--provision", "--target", "16", "--yes", "--json")
    assert lower.code == ExitCode.USAGE and "lowering" in lower.json["error"]["message"]
    no_tty = cli("scale", "--provision", "--target", "64", "--json")
    assert no_tty.code == ExitCode.USAGE
    assert "bounces" in no_tty.err or "connections drop" in no_tty.err
    assert "--yes" in no_tty.err
    status = cli("redis", "status", "--json").json
    assert status["pid"] == pid and status["databases"] == 32, "nothing restarted"


def test_command_provisioner_restarts_an_external_redis(repo, cli, tmp_path):
    server = start_redis(tmp_path / "ext", databases=16)
    try:
        restart = tmp_path / "restart.sh"
        binary = server.proc.args[0]
        restart.write_text(
            "#!/bin/sh\nset -e\n"
            f"kill $(cat {tmp_path / 'ext' / 'redis.pid'})\n"
            f"while [ -e {tmp_path / 'ext' / 'redis.pid'} ]; do sleep 0.05; done\n"
            f"{binary} {server.conf} --daemonize yes\n")
        restart.chmod(0o755)
        (repo / ".agents").mkdir()
        (repo / ".agents" / "config.toml").write_text(
            f'[redis]\nurl = "{server.url}"\nconf_path = "{server.conf}"\nrestart_command = "{restart}"\n')
        wt = cli("worktree", "new", "a", "--json").json
        redis_py.Redis.from_url(wt["redis_url"]).set("survivor", "yes")
        res = cli("scale", "--provision", "--target", "48", "--yes", "--json")
        assert res.code == 0, res.err
        assert res.json["provisioner"] == "command" and res.json["restarted"] and res.json["databases"] == 48
        assert "databases 48" in server.conf.read_text()
        assert redis_py.Redis.from_url(wt["redis_url"]).get("survivor") == b"yes"
    finally:
        pid_file = tmp_path / "ext" / "redis.pid"
        if pid_file.exists():
            import os
            import signal
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        server.stop()


def test_external_redis_without_restart_command_is_a_usage_error(repo, cli, external_redis):
    env = {"AGENTKIT_REDIS_URL": external_redis.url}
    res = cli("scale", "--provision", "--target", "128", "--yes", "--json", env=env)
    assert res.code == ExitCode.USAGE
    assert "restart_command" in res.json["error"]["message"]


def test_auth_failure_names_the_url_and_the_fix(repo, cli, tmp_path):
    server = start_redis(tmp_path / "auth", extra="requirepass s3cret\n")
    try:
        url = server.url.replace("redis://", "redis://:wrong@")
        res = cli("worktree", "new", "a", "--json", env={"AGENTKIT_REDIS_URL": url})
        assert res.code == ExitCode.FAILED
        err = res.json["error"]
        assert "refused authentication" in err["message"] and "wrong" not in err["message"]
        assert "***" in err["message"] and "password" in err["hint"]
        ok = cli("worktree", "new", "a", "--json", env={"AGENTKIT_REDIS_URL": url.replace("wrong", "s3cret")})
        assert ok.code == 0, ok.err
    finally:
        server.stop()


def events_of(cli, kind: str) -> list[dict]:
    return cli("events", "--kind", kind, "--json").json["events"]


@pytest.mark.parametrize("target", ["0", "-1", "2147483648", str(10**20)])
def test_provision_refuses_a_target_outside_redis_bounds_before_touching_anything(repo, cli, target):
    res = cli("scale", "--provision", "--target", target, "--yes", "--json")
    assert res.code == ExitCode.USAGE, res.err
    assert f"--target {int(target)} is outside 1-2147483647" in res.json["error"]["message"]
    assert not (repo / ".agents" / "redis" / "redis.pid").exists(), "Redis is not even started for it"
    started = cli("redis", "start", "--json", env={"AGENTKIT_REDIS_DATABASES": "16"}).json
    assert cli("scale", "--provision", "--target", target, "--yes", "--json").code == ExitCode.USAGE
    status = cli("redis", "status", "--json").json
    assert (status["pid"], status["databases"]) == (started["pid"], 16), "nothing restarted"


def test_a_restart_that_fails_brings_redis_back_on_its_previous_config(repo, cli):
    """2147483647 databases is within Redis's bounds, but no machine holds them: redis-server dies starting."""
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("with overcommit_memory=1 redis-server would really try to allocate 2^31 databases")
    started = cli("redis", "start", "--json", env={"AGENTKIT_REDIS_DATABASES": "16"}).json
    wt = cli("worktree", "new", "a", "--json").json
    redis_py.Redis.from_url(wt["redis_url"]).set("survivor", "yes")
    res = cli("scale", "--provision", "--target", "2147483647", "--yes", "--json")
    assert res.code == ExitCode.FAILED, res.err
    port = started["url"].rsplit(":", 1)[1].split("/")[0]
    message = res.json["error"]["message"]
    assert "did not come back with databases 2147483647" in message
    assert f"it runs again on its previous config (port {port}, databases 16)" in message
    status = cli("redis", "status", "--json").json
    assert status["running"] and status["url"] == started["url"] and status["databases"] == 16
    assert status["pid"] != started["pid"], "it was restarted, on the old config"
    assert redis_py.Redis.from_url(wt["redis_url"]).get("survivor") == b"yes"
    assert cli("worktree", "new", "b", "--json").json["redis_db"] == 2
    assert len(events_of(cli, "redis.started")) == 2 and events_of(cli, "redis.provisioned") == []


def test_two_racing_provisions_restart_redis_once(repo, cli):
    cli("redis", "start", env={"AGENTKIT_REDIS_DATABASES": "16"})
    wt = cli("worktree", "new", "a", "--json").json
    redis_py.Redis.from_url(wt["redis_url"]).set("survivor", "yes")
    procs = [subprocess.Popen([sys.executable, "-m", "agentkit.cli", "scale", "--provision", "--target", "64",
                               "--yes", "--json"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL) for _ in range(2)]
    results = [(p.wait(60), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert sorted(json.loads(out)["restarted"] for _, out, _ in results) == [False, True]
    assert len(events_of(cli, "redis.stopped")) == 1 and len(events_of(cli, "redis.provisioned")) == 1
    assert cli("redis", "status", "--json").json["databases"] == 64
    assert redis_py.Redis.from_url(wt["redis_url"]).get("survivor") == b"yes"


def test_an_unknown_provisioner_is_refused_before_redis_is_started(repo, cli):
    res = cli("scale", "--provision", "--yes", "--json", env={"AGENTKIT_REDIS_PROVISIONER": "nope"})
    assert res.code == ExitCode.USAGE
    assert res.json["error"]["message"] == "unknown redis.provisioner 'nope'"
    assert "managed" in res.json["error"]["hint"] and "command" in res.json["error"]["hint"]
    assert not (repo / ".agents" / "redis" / "redis.pid").exists()


def test_a_bind_that_is_no_address_is_a_usage_error_and_changes_nothing(repo, cli):
    env = {"AGENTKIT_REDIS_BIND": "999.1.1.1"}
    for args in (["worktree", "new", "a"], ["redis", "start"], ["scale", "--provision", "--yes"]):
        res = cli(*args, "--json", env=env)
        assert res.code == ExitCode.USAGE, res.err
        err = res.json["error"]
        assert "redis.bind = '999.1.1.1' (from env AGENTKIT_REDIS_BIND)" in err["message"]
        assert "127.0.0.1" in err["hint"] and "Traceback" not in res.err
    assert not (repo / ".agents" / "redis").exists()
    assert not (repo.parent / "app-worktrees").exists() and cli("worktree", "list", "--json").json["worktrees"] == []


def test_a_stranger_on_the_managed_port_moves_redis_and_rewrites_env_files(repo, cli):
    first = cli("worktree", "new", "a", "--json").json
    old_url = cli("redis", "status", "--json").json["url"]
    port = int(old_url.rsplit(":", 1)[1].split("/")[0])
    assert cli("redis", "stop").code == 0
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the old server's TIME_WAITs
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        res = cli("worktree", "new", "b", "--json")
        assert res.code == 0, res.err
        new_url = cli("redis", "status", "--json").json["url"]
        assert new_url != old_url
        warning = res.json["warning"]
        assert f"({old_url}) is taken by another process" in warning and f"now runs at {new_url}" in warning
        assert "rewrote the env files of a:" in warning and "restart them" in warning
        assert f"warning: {warning}" in res.err
        env_a = Path(first["env_file"]).read_text()
        assert f"REDIS_URL={new_url[:-2]}/1\n" in env_a and f":{port}/" not in env_a
        assert res.json["redis_url"] == f"{new_url[:-2]}/2"
        assert len(events_of(cli, "redis.moved")) == 1


def test_a_server_an_older_agentkit_started_is_adopted(repo, cli):
    """managed.json without a pid (written before agentkit recorded it) and a live server: no second one."""
    started = cli("redis", "start", "--json").json
    meta_path = repo / ".agents" / "redis" / "managed.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "pid"}))
    assert cli("worktree", "new", "a", "--json").json["redis_url"] == started["url"][:-2] + "/1"
    assert cli("redis", "status", "--json").json["pid"] == started["pid"]
    assert json.loads(meta_path.read_text())["pid"] == started["pid"]


def test_a_unix_socket_url_with_an_acl_user_flushes_only_the_worktrees_db(repo, cli, tmp_path):
    """agentkit speaks to Redis itself (AUTH user password, SELECT, FLUSHDB): a unix socket URL with the user,
    password and DB in its query reaches the right DB, and a key of another DB is left alone."""
    folder = tmp_path / "acl"
    sock = folder / "redis.sock"
    server = start_redis(folder, extra=f'unixsocket "{sock}"\nunixsocketperm 700\n'
                                       "user default off\nuser bob on >pw ~* &* +@all\n")
    try:
        admin = redis_py.Redis(unix_socket_path=str(sock), username="bob", password="pw")
        admin.select(1)
        admin.set("left", "over")  # DB 1 is the first worktree's slot: `new` must empty it
        redis_py.Redis(unix_socket_path=str(sock), username="bob", password="pw", db=0).set("keep", "me")
        url = f"unix://{sock}?username=bob&password=pw"
        res = cli("worktree", "new", "a", "--json", env={"AGENTKIT_REDIS_URL": url})
        assert res.code == 0, res.err
        assert res.json["redis_db"] == 1
        assert redis_py.Redis(unix_socket_path=str(sock), username="bob", password="pw", db=1).dbsize() == 0
        assert redis_py.Redis(unix_socket_path=str(sock), username="bob", password="pw", db=0).get("keep") == b"me"
        wrong = cli("worktree", "new", "b", "--json", env={"AGENTKIT_REDIS_URL": url.replace("=pw", "=nope")})
        assert wrong.code == ExitCode.FAILED
        assert "refused authentication" in wrong.json["error"]["message"]
        assert "nope" not in wrong.out + wrong.err
    finally:
        server.stop()


def test_a_server_that_hangs_up_without_answering_is_unreachable_not_a_traceback(repo, cli):
    """Something listening on redis.url that accepts and closes (not Redis, or a proxy with nothing behind it)."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        res = cli("worktree", "new", "a", "--json", env={"AGENTKIT_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        assert res.code == ExitCode.FAILED, res.err
        assert "is unreachable" in res.json["error"]["message"]
        assert "Traceback" not in res.err
        assert cli("worktree", "list", "--json", env={"AGENTKIT_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
                   ).json["worktrees"] == []
    finally:
        listener.close()
