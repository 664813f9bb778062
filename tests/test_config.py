"""Config precedence: defaults < pyproject [tool.agentkit] < .agents/config.toml < env < flags."""

from agentkit import config
from agentkit.errors import ExitCode


def test_precedence_and_sources(repo, cli):
    (repo / "pyproject.toml").write_text("[tool.agentkit.capacity]\nfloor = 5\nstep = 2\n"
                                         "[tool.agentkit.ports]\nbase = 30000\n")
    (repo / ".agents").mkdir()
    (repo / ".agents" / "config.toml").write_text("[capacity]\nstep = 3\n")
    res = cli("config", "show", "--json", env={"AGENTKIT_PORTS_BASE": "40000"})
    assert res.code == 0, res.err
    got = {row["key"]: row for row in res.json["config"]}
    assert got["capacity.floor"]["value"] == 5 and "pyproject.toml" in got["capacity.floor"]["source"]
    assert got["capacity.step"]["value"] == 3 and got["capacity.step"]["source"].endswith("config.toml")
    assert got["ports.base"] == {"key": "ports.base", "value": 40000, "source": "env AGENTKIT_PORTS_BASE"}
    assert got["redis.databases"]["source"] == "default"
    assert set(got) == set(config.DEFAULTS) | set(config.plugin_defaults())  # an installed plugin's keys too


PLUGIN = """
from agentkit.hookspecs import hookimpl

@hookimpl
def config_keys():
    return {"executors.toy.address": "", "executors.toy.cpus": 1.0, "executors.toy.tags": [],
            "executors.toy.slots": 4, "capacity.floor": 99}
"""


def test_a_plugins_keys_are_read_typed_and_shown_like_agentkits_own(repo, cli, tmp_path):
    from tests.conftest import write_plugin

    env = write_plugin(tmp_path, "toyplug", PLUGIN)
    (repo / ".agents").mkdir()
    (repo / ".agents" / "config.toml").write_text('[executors.toy]\naddress = "http://h:1"\ntags = ["a", "b"]\n')
    res = cli("config", "show", "--json", env={**env, "AGENTKIT_EXECUTORS_TOY_CPUS": "0.5"})
    assert res.code == 0, res.err
    got = {row["key"]: row for row in res.json["config"]}
    assert got["executors.toy.address"]["value"] == "http://h:1"
    assert got["executors.toy.tags"]["value"] == ["a", "b"]
    assert got["executors.toy.cpus"] == {"key": "executors.toy.cpus", "value": 0.5,
                                         "source": "env AGENTKIT_EXECUTORS_TOY_CPUS"}
    assert got["executors.toy.slots"] == {"key": "executors.toy.slots", "value": 4, "source": "default"}
    assert got["capacity.floor"]["value"] == 20, "a plugin cannot redefine one of agentkit's keys"
    res = cli("config", "show", "--json", env={**env, "AGENTKIT_EXECUTORS_TOY_CPUS": "lots"})
    assert res.code == ExitCode.USAGE and "executors.toy.cpus" in res.json["error"]["message"]
    (repo / ".agents" / "config.toml").write_text('[executors.toy]\nnope = 1\n')
    res = cli("config", "show", "--json", env=env)
    assert res.code == ExitCode.USAGE and "unknown config key 'executors.toy.nope'" in res.json["error"]["message"]


def test_bad_values_and_unknown_keys_exit_2(repo, cli):
    res = cli("config", "show", "--json", env={"AGENTKIT_CAPACITY_FLOOR": "lots"})
    assert res.code == ExitCode.USAGE and "capacity.floor" in res.json["error"]["message"]
    res = cli("config", "show", "--json", env={"AGENTKIT_CAPACITY_STEP": "0"})
    assert res.code == ExitCode.USAGE and "at least 1" in res.json["error"]["message"]
    (repo / ".agents").mkdir()
    (repo / ".agents" / "config.toml").write_text("[capacity]\nflor = 3\n")
    res = cli("config", "show", "--json")
    assert res.code == ExitCode.USAGE and "capacity.flor" in res.json["error"]["message"]
    (repo / ".agents" / "config.toml").write_text("[capacity\n")
    res = cli("config", "show", "--json")
    assert res.code == ExitCode.USAGE and "cannot parse" in res.json["error"]["message"]


def test_reserved_list_from_env(repo):
    cfg = config.load(repo, repo / ".agents" / "config.toml")
    assert cfg["redis.reserved"] == [0]
    import os

    os.environ["AGENTKIT_REDIS_RESERVED"] = "0, 1"
    try:
        assert config.load(repo, repo / "none.toml")["redis.reserved"] == [0, 1]
    finally:
        del os.environ["AGENTKIT_REDIS_RESERVED"]


def test_values_must_have_their_key_type(repo, monkeypatch):
    """TOML values are not converted: a list, a float or a bool is not a string or an int; text from env vars
    and flags is."""
    import pytest

    from agentkit.errors import AgentkitError

    (repo / ".agents").mkdir()
    toml = repo / ".agents" / "config.toml"
    for text, says in (("[worktrees]\nroot = [1, 2]\n", "is not a string"), ("[capacity]\nfloor = 2.5\n", "valid int"),
                       ("[capacity]\nstep = false\n", "valid int"), ("[redis]\nreserved = 0\n", "list of ints"),
                       ("[redis]\nreserved = [true]\n", "list of ints")):
        toml.write_text(text)
        with pytest.raises(AgentkitError) as refused:
            config.load(repo, toml)
        assert refused.value.code == ExitCode.USAGE and says in refused.value.message, text
    toml.write_text('[capacity]\nfloor = "7"\n[redis]\nreserved = "0, 2"\n')
    monkeypatch.setenv("AGENTKIT_CAPACITY_STEP", " 4")
    cfg = config.load(repo, toml)
    assert (cfg["capacity.floor"], cfg["capacity.step"], cfg["redis.reserved"]) == (7, 4, [0, 2])


def test_redis_bind_is_ip_addresses_or_host_names_that_resolve(repo, monkeypatch):
    import pytest

    from agentkit.errors import AgentkitError

    for good in ("127.0.0.1", "::1", "127.0.0.1 -::1", "localhost"):
        monkeypatch.setenv("AGENTKIT_REDIS_BIND", good)
        assert config.load(repo, repo / "none.toml")["redis.bind"] == good
    for bad, says in (("999.1.1.1", "not an IP address or a host name"), ("", "is empty"),
                      ("no-such-host.invalid", "does not resolve"), ("bad_host!", "not an IP address")):
        monkeypatch.setenv("AGENTKIT_REDIS_BIND", bad)
        with pytest.raises(AgentkitError) as refused:
            config.load(repo, repo / "none.toml")
        assert refused.value.code == ExitCode.USAGE and "redis.bind" in refused.value.message
        assert says in refused.value.message and "AGENTKIT_REDIS_BIND" in refused.value.hint


def test_config_show_never_prints_the_redis_password(repo, cli):
    env = {"AGENTKIT_REDIS_URL": "redis://:s3cret@db.example:6379/0"}
    shown = cli("config", "show", "--json", env=env)
    assert shown.code == 0
    url = next(c for c in shown.json["config"] if c["key"] == "redis.url")
    assert url == {"key": "redis.url", "value": "redis://:***@db.example:6379/0", "source": "env AGENTKIT_REDIS_URL"}
    table = cli("config", "show", env=env)
    assert "s3cret" not in table.out + table.err and "***" in table.out
