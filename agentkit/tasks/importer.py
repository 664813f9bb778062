"""`task import`: a JSON or YAML file of tasks, all added or none, with every problem listed."""

import json
import math
from pathlib import Path

from agentkit import events
from agentkit.errors import AgentkitError, ExitCode, not_found, not_utf8, os_failure, usage
from agentkit.tasks import dag, table

INT64 = range(-(2**63), 2**63)  # what SQLite's INTEGER holds


def _read(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise not_found(f"cannot read {path}: {exc.strerror}", "check the path of the tasks file") from exc
    except IsADirectoryError as exc:
        raise usage(f"{path} is a folder, not a tasks file", "pass a JSON or YAML file") from exc
    except OSError as exc:
        raise os_failure(exc, f"tasks file {path}") from exc
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not an error
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, "tasks") from exc


def load_file(path: Path) -> list:
    text = _read(path)
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml and json raise their own types
        raise usage(f"cannot parse {path}: {exc}", "tasks files are JSON or YAML (.yaml/.yml)") from exc
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise usage(f"{path} must hold a list of tasks (or an object with a `tasks` list)")
    return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _not_json(value, where: str) -> str | None:
    """Where in `value` sits something a task cannot store as JSON (a YAML date, set or binary), or None."""
    if value is None or isinstance(value, (str, int)) or isinstance(value, float) and math.isfinite(value):
        return None
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _not_json(v, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r}, which is not a string: quote it"
            if problem := _not_json(v, f"{where}.{key}"):
                return problem
        return None
    return (f"{where} is a YAML {type(value).__name__} ({value!s:.60}), which a task cannot store: quote it "
            "to keep it as text")


class _Ids:
    """Ids for entries without one: past every id in use, skipping ids other entries ask for."""

    def __init__(self, existing: set[int], explicit: set[int]):
        self.taken = existing | explicit
        self.next = max(existing, default=0) + 1

    def new(self) -> int:
        while self.next in self.taken:
            self.next += 1
        self.next += 1
        return self.next - 1


def _entry(i: int, e, existing: set[int], seen: set[int], ids: _Ids, problems: list[str]) -> dict | None:
    """One entry checked on its own; its problems are appended, and None returned when it cannot be staged."""
    if not isinstance(e, dict):
        problems.append(f"entry {i}: not an object")
        return None
    name = e.get("name") or e.get("description")
    label = f"entry {i} ({name!r})" if name else f"entry {i}"
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{label}: needs a name")
        return None
    tid = e.get("id")
    if tid is not None and (not _is_int(tid) or tid < 1 or tid not in INT64):
        problems.append(f"{label}: id must be a positive integer (64-bit)")
        return None
    if tid in existing:
        problems.append(f"{label}: id {tid} already exists")
    elif tid is not None and tid in seen:
        problems.append(f"{label}: id {tid} is used twice in this file")
    if tid is not None:
        seen.add(tid)
    checks = (("priority", 1000, lambda v: _is_int(v) and v in INT64, "priority must be an integer (64-bit)"),
              ("description", "", lambda v: isinstance(v, str), "description must be a string"),
              ("steps", [], lambda v: isinstance(v, list), "steps must be a list"),
              ("meta", {}, lambda v: isinstance(v, dict), "meta must be an object"))
    for key, default, ok, message in checks:
        value = e.get(key, default)
        if not ok(value):
            problems.append(f"{label}: {message}")
        elif problem := _not_json(value, key):
            problems.append(f"{label}: {problem}")
    if e.get("status") not in (None, "pending", "passing"):
        problems.append(f"{label}: status on import must be pending or passing")
    deps = e.get("depends_on", [])
    if not isinstance(deps, list):
        problems.append(f"{label}: depends_on must be a list")
        deps = []
    return {"label": label, "id": tid if tid is not None else ids.new(), "name": name,
            "priority": e.get("priority", 1000), "steps": e.get("steps", []), "meta": e.get("meta", {}),
            "status": "passing" if e.get("passes") is True or e.get("status") == "passing" else "pending",
            "deps": deps, "description": e.get("description", "") if e.get("name") else "",
            "category": str(e.get("category") or "")}


def _resolve(s: dict, known_ids: set[int], names_in_file: dict, names_in_db: dict, problems: list[str]) -> set:
    """An entry's depends_on (ids or names; names in the file first) as task ids."""
    resolved = set()
    for ref in s["deps"]:
        if _is_int(ref):
            if ref in known_ids:
                resolved.add(ref)
            else:
                problems.append(f"{s['label']}: depends on unknown task id {ref}")
        elif isinstance(ref, str):
            hits = names_in_file.get(ref) or names_in_db.get(ref) or []
            if len(hits) == 1:
                resolved.add(hits[0])
            elif not hits:
                problems.append(f"{s['label']}: depends on unknown task {ref!r}")
            else:
                problems.append(f"{s['label']}: depends on {ref!r}, a name shared by tasks {hits}")
        else:
            problems.append(f"{s['label']}: depends_on entries are ids or names, not {ref!r}")
    if s["id"] in resolved:
        problems.append(f"{s['label']}: depends on itself")
        resolved.discard(s["id"])
    return resolved


def _by_entry(problem: str) -> int:
    return int(problem.split()[1].rstrip(":")) if problem.startswith("entry ") else 1 << 30


def import_file(repo, path: Path) -> dict:
    """Add every task in a JSON/YAML file, or none: one bad entry rejects the file with every problem listed."""
    entries = load_file(Path(path))
    problems: list[str] = []
    with repo.store.tx() as conn:
        names_in_db: dict[str, list[int]] = {}
        for task_id, name in conn.execute("SELECT id, name FROM tasks"):
            names_in_db.setdefault(name, []).append(task_id)
        existing = {i for ids in names_in_db.values() for i in ids}
        explicit = {e["id"] for e in entries if isinstance(e, dict) and _is_int(e.get("id"))}
        ids, seen = _Ids(existing, explicit), set()
        staged = [s for i, e in enumerate(entries, 1) if (s := _entry(i, e, existing, seen, ids, problems))]
        names_in_file: dict[str, list[int]] = {}
        for s in staged:
            names_in_file.setdefault(s["name"], []).append(s["id"])
        known = existing | {s["id"] for s in staged}
        deps = table.deps_map(conn)
        for s in staged:
            deps[s["id"]] = _resolve(s, known, names_in_file, names_in_db, problems)
        cycle = dag.find_cycle(sorted(known), deps)
        if cycle:
            problems.append(dag.cycle_error(cycle).message)
        if problems:
            problems.sort(key=_by_entry)
            raise AgentkitError(f"{path}: {len(problems)} problem(s), nothing imported:\n  " + "\n  ".join(problems),
                                "fix the entries listed and import again", ExitCode.USAGE)
        for s in staged:
            table.insert(conn, s["name"], s["priority"], s["description"], s["category"], s["steps"], s["meta"],
                         s["status"], s["id"])
        table.add_edges(conn, [(s["id"], dep) for s in staged for dep in sorted(deps[s["id"]])])
        table.refresh_dependents(conn, deps)
        events.record(conn, "task.imported", str(path), count=len(staged))
    return {"schema_version": 1, "imported": len(staged), "ids": [s["id"] for s in staged]}
