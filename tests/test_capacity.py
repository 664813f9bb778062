"""The elastic band: grow at 21, shrink back, floor, ceiling, scale out/in, the mirror file, the policy hook."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkit import capacity, worktrees
from agentkit.builtin.band import band_target
from agentkit.errors import AgentkitError, ExitCode
from agentkit.repo import Repo
from tests.conftest import write_plugin


def band_of(repo_path):
    r = Repo(repo_path)
    try:
        return capacity.load(r.store.conn, r.config)
    finally:
        r.close()


def make(repo_path, slugs):
    r = Repo(repo_path)
    out = [worktrees.new(r, s) for s in slugs]
    r.close()
    return out


def test_21st_worktree_grows_band_and_removal_shrinks_back_to_floor(repo, cli):
    made = make(repo, [f"w{i:02d}" for i in range(20)])
    assert [w["redis_db"] for w in made] == list(range(1, 21))  # lowest free first, DB 0 reserved
    assert band_of(repo).current == 20

    res = cli("worktree", "new", "w20", "--json")
    assert res.code == 0, res.err
    assert res.json["redis_db"] == 21
    assert res.json["band_change"] == {"from": 20, "to": 30, "reason": "allocating for w20"}
    assert "band grew 20 → 30" in res.err
    status = cli("scale", "status", "--json").json
    assert (status["current"], status["used"], status["free"]) == (30, 21, 9)
    assert json.loads((repo / ".agents" / "redis-capacity.json").read_text())["current"] == 30

    res = cli("worktree", "remove", "w20", "--json")
    assert res.code == 0, res.err
    assert res.json["band_change"]["to"] == 20
    assert "band shrank 30 → 20" in res.err
    r = Repo(repo)
    for i in range(5):
        worktrees.remove(r, f"w{i:02d}")
    r.close()
    band = band_of(repo)
    assert band.current == 20, "never below the floor"
    assert json.loads((repo / ".agents" / "redis-capacity.json").read_text())["current"] == 20
    kinds = [e["kind"] for e in cli("events", "--json").json["events"]]
    assert kinds.count("band.grew") == 1 and kinds.count("band.shrank") == 1


def test_ceiling_reached_exits_3_with_guidance(repo, cli, monkeypatch):
    monkeypatch.setenv("AGENTKIT_REDIS_DATABASES", "6")  # 5 allocatable DBs under a floor of 20
    make(repo, [f"w{i}" for i in range(5)])
    res = cli("worktree", "new", "w5", "--json")
    assert res.code == ExitCode.CAPACITY == 3
    err = res.json["error"]
    assert "physical ceiling 6 reached" in err["message"]
    assert "scale --provision --target" in err["hint"] and "worktree cleanup" in err["hint"]
    assert not (repo.parent / "app-worktrees" / "w5").exists(), "nothing half-made"
    assert cli("worktree", "list", "--json").json["worktrees"][-1]["slug"] == "w4"


def test_growth_is_clipped_at_the_ceiling(repo, monkeypatch):
    monkeypatch.setenv("AGENTKIT_REDIS_DATABASES", "24")  # ceiling 23: 20 -> 23, then full
    made = make(repo, [f"w{i:02d}" for i in range(23)])
    assert made[20]["band_change"] == {"from": 20, "to": 23, "reason": "allocating for w20"}
    r = Repo(repo)
    with pytest.raises(AgentkitError) as exc:
        worktrees.new(r, "w23")
    assert exc.value.code == ExitCode.CAPACITY
    worktrees.remove(r, "w22")
    assert capacity.load(r.store.conn, r.config).current == 23, "w20 and w21 still sit in the top step"
    worktrees.remove(r, "w20")
    worktrees.remove(r, "w21")
    assert capacity.load(r.store.conn, r.config).current == 20
    r.close()


def test_scale_out_and_in_by_hand(repo, cli):
    make(repo, ["a"])
    out = cli("scale", "out", "--json")
    assert out.code == 0 and out.json["current"] == 30
    assert cli("scale", "in", "--json").json["current"] == 20
    res = cli("scale", "in", "--json")
    assert res.code == ExitCode.USAGE and "floor" in res.json["error"]["message"]


def test_scale_in_refuses_while_top_step_is_in_use(repo, cli):
    make(repo, [f"w{i:02d}" for i in range(21)])  # w20 sits in the top step (db 21)
    res = cli("scale", "in", "--json")
    assert res.code == ExitCode.CONFLICT
    assert res.json["error"]["message"] == "the top step (slots 20-29) is in use by w20", "slot numbers, not DBs"
    assert "worktree remove" in res.json["error"]["hint"]
    assert cli("scale", "status", "--json").json["current"] == 30


def test_status_without_redis_prints_band_from_state(repo, cli, monkeypatch):
    make(repo, ["a"])
    cli("redis", "stop")
    res = cli("scale", "status", "--json")
    assert res.code == 0
    assert res.json["physical_max"] is None and res.json["current"] == 20 and res.json["used"] == 1
    assert "warning" in res.err and "unreachable" in res.err


def test_floor_and_step_come_from_config(repo, cli):
    (repo / ".agents").mkdir()
    (repo / ".agents" / "config.toml").write_text("[capacity]\nfloor = 2\nstep = 3\n")
    made = make(repo, ["a", "b", "c"])
    assert made[2]["band_change"] == {"from": 2, "to": 5, "reason": "allocating for c"}
    assert cli("scale", "status", "--json", env={"AGENTKIT_CAPACITY_STEP": "4"}).json["step"] == 4


def test_a_policy_plugin_replaces_the_elastic_band(repo, tmp_path, monkeypatch, cli):
    env = write_plugin(tmp_path, "fixed_band", "from agentkit.hookspecs import hookimpl\n\n"
                       "@hookimpl(tryfirst=True)\ndef band_target(band):\n    return band['current']\n")
    env["AGENTKIT_CAPACITY_FLOOR"] = "2"
    assert cli("worktree", "new", "a", env=env).code == 0
    assert cli("worktree", "new", "b", env=env).code == 0
    res = cli("worktree", "new", "c", "--json", env=env)
    assert res.code == ExitCode.CAPACITY and "band policy" in res.json["error"]["message"]
    listed = cli("plugins", "--json", env=env).json["plugins"]
    assert {"name": "fixed_band", "builtin": False, "hooks": ["band_target"]} in listed


# ---- the policy alone, as a property ----------------------------------------------------------------

@st.composite
def bands(draw):
    floor = draw(st.integers(1, 40))
    step = draw(st.integers(1, 15))
    ceiling = draw(st.integers(1, 80))
    current = draw(st.integers(min(floor, ceiling), ceiling))
    occupied = sorted(draw(st.sets(st.integers(0, current - 1), max_size=current)))
    return {"floor": floor, "step": step, "ceiling": ceiling, "current": current, "occupied": occupied}


@settings(max_examples=300, deadline=None)
@given(bands(), st.booleans())
def test_elastic_band_invariants(band, want):
    new = band_target({**band, "want": int(want)})
    floor = min(band["floor"], band["ceiling"])
    assert floor <= new <= band["ceiling"]
    assert new > max(band["occupied"], default=-1), "never cuts off a used slot"
    full = len(band["occupied"]) == band["current"]
    if want and full and band["current"] < band["ceiling"]:
        assert new == min(band["current"] + band["step"], band["ceiling"])
    elif want:
        assert new == band["current"]
    else:
        assert new <= band["current"]
        if new > floor:  # it stopped shrinking because the step below the top is in use
            lower = capacity.grid_below(new, band["floor"], band["step"])
            assert any(lower <= i < new for i in band["occupied"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=120))
def test_allocate_release_sequences_keep_band_on_grid(ops):
    """Any sequence of allocations and releases keeps the band >= floor, <= ceiling, covering every used slot."""
    floor, step, ceiling = 20, 10, 63
    current, used = floor, set()
    for alloc in ops:
        if alloc:
            if len(used) == current:
                current = band_target({"floor": floor, "step": step, "ceiling": ceiling, "current": current,
                                       "occupied": sorted(used), "want": 1})
            free = next((i for i in range(current) if i not in used), None)
            if free is not None:
                used.add(free)
        elif used:
            used.discard(max(used))
            current = band_target({"floor": floor, "step": step, "ceiling": ceiling, "current": current,
                                   "occupied": sorted(used), "want": 0})
        assert floor <= current <= ceiling
        assert all(i < current for i in used)
        assert current in (*range(floor, ceiling, step), ceiling)
    if not used:
        assert current == floor
