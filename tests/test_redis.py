"""The managed redis-server and provisioning the physical ceiling (managed and `command` provisioners)."""

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
