"""The layering holds: each table is read and written by its owner only, and nobody calls another module's
underscore helpers (docs/architecture.md)."""

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "agentkit"
OWNERS = {"worktrees": "worktrees.py", "band": "band.py", "tasks": "tasks/", "task_deps": "tasks/",
          "task_scoring": "tasks/", "claims": "claims.py", "jobs": "jobs.py", "events": "events.py",
          "job_pools": "jobs.py", "runs": "orchestrator/", "run_agents": "orchestrator/"}


def sources():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if not rel.startswith("state/"):  # the schema's migrations create every table
            yield rel, path.read_text()


def test_each_table_has_one_owner():
    for table, owner in OWNERS.items():
        sql = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN)\s+{table}\b")
        users = sorted(rel for rel, text in sources() if sql.search(text))
        assert all(rel.startswith(owner) for rel in users), f"{table} is owned by {owner}, also used in {users}"


def test_no_module_calls_another_modules_private_helpers():
    modules = "|".join(sorted({Path(rel).stem for rel, _ in sources()} - {"__init__"}))
    private = re.compile(rf"\b(?:{modules})\._[a-z]\w*")
    found = [(rel, m.group(0)) for rel, text in sources() for m in private.finditer(text)
             if Path(rel).stem != m.group(0).split(".")[0]]
    assert found == []
