"""`agentkit demo` — the README's first command — runs end to end on a fresh folder and stops its Redis."""

import re

from tests.conftest import ak


def test_demo_walks_through_every_feature_and_leaves_nothing_running(tmp_path):
    folder = tmp_path / "demo"
    res = ak("demo", "--dir", str(folder), "--agents", "21", cwd=tmp_path, timeout=180)
    assert res.code == 0, res.err
    out = res.out
    assert "21 worktrees in" in out and "band grew 20 → 30 slots for agent-21" in out
    assert "keys left in DB 1: 0" in out
    assert "worktrees: 0, band: 20 slots" in out
    assert re.search(r"refused: dependency cycle refused: \d+ → \d+ → \d+ → \d+", out)
    assert re.search(r"run \d+: every task passing \(passing 12\) in [\d.]+s, exit 0", out)
    assert "task  4 checkout api   → failing (job" in out and "task  4 checkout api   → passing" in out
    assert "integrated 12 tasks into agentkit/integration" in out and "testing agent re-verifies task" in out
    assert re.search(r"job \d+: timed_out, exit status 124, processes left: 0", out)
    assert re.search(r"plain-checkout: adopted as plain-checkout, redis db \d+, ports \d+-\d+", out)
    assert re.search(r"ok   hooks +agentkit's git hooks are installed", out)
    assert re.search(r"warn agents_md .*\n +fix: agentkit install-docs", out)
    assert "Traceback" not in res.err
    status = ak("redis", "status", "--json", cwd=folder / "shop")
    assert status.code == 0 and status.json["running"] is False, "without --keep the demo stops its Redis"
