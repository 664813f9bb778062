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
    assert set(got) == set(config.DEFAULTS)


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
