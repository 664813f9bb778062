"""`task import`: tasks from a JSON or YAML file or an autocoder features.db, all added or none, each problem listed."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from agentkit import events
from agentkit.errors import AgentkitError, ExitCode, not_found, not_utf8, os_failure, usage
from agentkit.tasks import dag, table

INT64 = range(-(2**63), 2**63)  # what SQLite's INTEGER holds
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database, whatever its name


@dataclass
class Source:
    """What a file holds: numbered entries, problems found while reading them, and how their ids read."""

    entries: list[tuple[int, object]]  # (number in problems, entry)
    noun: str = "entry"  # how problems name an entry: "entry 3" (its place in a file), "feature 7" (its id)
    own_ids: bool = False  # ids and integer depends_on are the source's own (autocoder's), not agentkit's
    problems: list[str] = field(default_factory=list)
    format: str = "file"


# ---- reading ------------------------------------------------------------------------------------------

def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise not_found(f"cannot read {path}: {exc.strerror}", "check the path of the tasks file") from exc
    except IsADirectoryError as exc:
        raise usage(f"{path} is a folder, not a tasks file", "pass a JSON or YAML file") from exc
    except OSError as exc:
        raise os_failure(exc, f"tasks file {path}") from exc


def _parse(path: Path, raw: bytes) -> list:
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not an error
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, "tasks") from exc
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


def load(path: Path) -> Source:
    """A tasks file (JSON, or YAML by its suffix) or, by its header, an autocoder features.db."""
    raw = _read(path)
    if raw.startswith(SQLITE_HEADER):
        return _features(path, raw)
    return Source(list(enumerate(_parse(path, raw), 1)))


# ---- autocoder's features.db ----------------------------------------------------------------------------

# Its `features` columns in the order _feature reads them; older databases lack some (dependencies, in_progress).
FEATURE_COLUMNS = ("id", "priority", "category", "name", "description", "steps", "passes", "dependencies")
FEATURES_HINT = "pass autocoder's features.db (in the project folder) or a JSON/YAML tasks file"


def _uri(path: Path, raw: bytes) -> str:
    """Read-only, and leaving nothing behind: a WAL database nobody has open (no -wal file beside it) is read as
    immutable, since even a read-only reader of a WAL database would create -wal and -shm files next to it."""
    idle_wal = raw[18:19] == b"\x02" and not Path(f"{path}-wal").exists()
    return f"{path.resolve().as_uri()}?{'immutable=1' if idle_wal else 'mode=ro'}"


def _feature_rows(path: Path, raw: bytes) -> list[tuple]:
    import sqlite3

    try:
        conn = sqlite3.connect(_uri(path, raw), uri=True)
    except sqlite3.Error as exc:
        raise usage(f"cannot open {path} as an SQLite database: {exc}", FEATURES_HINT) from exc
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(features)")}
        if not cols:
            raise usage(f"{path} is an SQLite database without a features table: not an autocoder features.db",
                        FEATURES_HINT)
        if missing := [c for c in ("id", "name") if c not in cols]:
            raise usage(f"{path}: its features table has no {' or '.join(missing)} column", FEATURES_HINT)
        select = ", ".join(c if c in cols else f"NULL AS {c}" for c in FEATURE_COLUMNS)
        return conn.execute(f"SELECT {select} FROM features ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise usage(f"cannot read {path} as an autocoder features.db: {exc}",
                    "check that it is a whole SQLite file and that autocoder is not writing it") from exc
    finally:
        conn.close()


def _json_column(text, column: str, label: str, problems: list[str]):
    """A JSON text column as a list (NULL, and the JSON null SQLAlchemy writes for None, read as [])."""
    if text is None:
        return []
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        problems.append(f"{label}: {column} is not valid JSON ({exc}): {str(text)[:60]!r}")
        return []
    return [] if value is None else value


def _feature(row: tuple, problems: list[str]) -> tuple[int, object]:
    """One feature row as an import entry (in the shape a tasks file has); its problems are appended."""
    fid, priority, category, name, description, steps, passes, deps = row
    label = f"feature {fid} ({name!r})" if name else f"feature {fid}"
    steps = _json_column(steps, "steps", label, problems)
    deps = _json_column(deps, "dependencies", label, problems)
    if not isinstance(deps, list) or not all(_is_int(d) for d in deps):
        problems.append(f"{label}: dependencies must be a JSON list of feature ids, not {deps!r:.60}")
        deps = []
    entry = {"id": fid, "name": name, "priority": 1000 if priority is None else priority,
             "category": category, "description": description or "", "steps": steps, "depends_on": deps,
             "passes": passes == 1, "meta": {"autocoder_id": fid}}  # in_progress is ignored: nothing is claimed
    return fid, entry


def _features(path: Path, raw: bytes) -> Source:
    problems: list[str] = []
    entries = [_feature(row, problems) for row in _feature_rows(path, raw)]
    return Source(entries, "feature", own_ids=True, problems=problems, format="autocoder")


# ---- checking entries ---------------------------------------------------------------------------------

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


_FIELDS = (("priority", 1000, lambda v: _is_int(v) and v in INT64, "priority must be an integer (64-bit)"),
           ("description", "", lambda v: isinstance(v, str), "description must be a string"),
           ("steps", [], lambda v: isinstance(v, list), "steps must be a list"),
           ("meta", {}, lambda v: isinstance(v, dict), "meta must be an object"))


def _check_fields(label: str, e: dict, problems: list[str]) -> None:
    for key, default, ok, message in _FIELDS:
        value = e.get(key, default)
        if not ok(value):
            problems.append(f"{label}: {message}")
        elif problem := _not_json(value, key):
            problems.append(f"{label}: {problem}")
    if e.get("status") not in (None, "pending", "passing"):
        problems.append(f"{label}: status on import must be pending or passing")


def _entry(i: int, e, source: Source, existing: set[int], seen: set[int], ids: _Ids,
           problems: list[str]) -> dict | None:
    """One entry checked on its own; its problems are appended, and None returned when it cannot be staged."""
    if not isinstance(e, dict):
        problems.append(f"{source.noun} {i}: not an object")
        return None
    name = e.get("name") or e.get("description")
    label = f"{source.noun} {i} ({name!r})" if name else f"{source.noun} {i}"
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{label}: needs a name")
        return None
    tid = e.get("id")
    if tid is not None and (not _is_int(tid) or tid < 1 or tid not in INT64):
        problems.append(f"{label}: id must be a positive integer (64-bit)")
        return None
    if source.own_ids and tid in existing:
        tid = None  # autocoder's id is taken here: the task gets a new one, and depends_on follows it
    elif tid in existing:
        problems.append(f"{label}: id {tid} already exists")
    elif tid is not None and tid in seen:
        problems.append(f"{label}: id {tid} is used twice in this file")
    if tid is not None:
        seen.add(tid)
    _check_fields(label, e, problems)
    deps = e.get("depends_on", [])
    if not isinstance(deps, list):
        problems.append(f"{label}: depends_on must be a list")
        deps = []
    return {"label": label, "id": tid if tid is not None else ids.new(), "source_id": e.get("id"), "name": name,
            "priority": e.get("priority", 1000), "steps": e.get("steps", []), "meta": e.get("meta", {}),
            "status": "passing" if e.get("passes") is True or e.get("status") == "passing" else "pending",
            "deps": deps, "description": e.get("description", "") if e.get("name") else "",
            "category": str(e.get("category") or "")}


# ---- resolving dependencies -----------------------------------------------------------------------------

def _own_deps(staged: list[dict], problems: list[str]) -> None:
    """A source's own ids in depends_on become the task ids its entries got (autocoder's, or new ones)."""
    by_source = {s["source_id"]: s["id"] for s in staged}
    for s in staged:
        known = [by_source[ref] for ref in s["deps"] if ref in by_source]
        problems.extend(f"{s['label']}: depends on unknown feature id {ref}" for ref in s["deps"]
                        if ref not in by_source)
        s["deps"] = known


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


# ---- the import ---------------------------------------------------------------------------------------

def _plan(conn, source: Source) -> tuple[list[dict], dag.Deps, list[str]]:
    """The staged tasks, the graph with them, and every problem (the caller inserts only when there is none)."""
    problems = list(source.problems)
    names_in_db: dict[str, list[int]] = {}
    for task_id, name in conn.execute("SELECT id, name FROM tasks"):
        names_in_db.setdefault(name, []).append(task_id)
    existing = {i for ids in names_in_db.values() for i in ids}
    explicit = {e["id"] for _, e in source.entries if isinstance(e, dict) and _is_int(e.get("id"))}
    ids, seen = _Ids(existing, explicit), set()
    staged = [s for i, e in source.entries if (s := _entry(i, e, source, existing, seen, ids, problems))]
    if source.own_ids:
        _own_deps(staged, problems)
    names_in_file: dict[str, list[int]] = {}
    for s in staged:
        names_in_file.setdefault(s["name"], []).append(s["id"])
    known = existing | {s["id"] for s in staged}
    deps = table.deps_map(conn)
    for s in staged:
        deps[s["id"]] = _resolve(s, known, names_in_file, names_in_db, problems)
    if cycle := dag.find_cycle(sorted(known), deps):
        problems.append(dag.cycle_error(cycle).message)
    return staged, deps, problems


def _by_entry(problem: str) -> int:
    """Problems in entry order: `entry 3: …` / `feature 7 …` by their number, the rest (a cycle) last."""
    words = problem.split(maxsplit=2)
    if len(words) > 1 and words[0] in ("entry", "feature") and words[1].rstrip(":").isdigit():
        return int(words[1].rstrip(":"))
    return 1 << 63


def import_file(repo, path: Path) -> dict:
    """Add every task in a JSON/YAML file or an autocoder features.db, or none: one bad entry rejects the file
    with every problem listed."""
    source = load(Path(path))
    with repo.store.tx() as conn:
        staged, deps, problems = _plan(conn, source)
        if problems:
            problems.sort(key=_by_entry)
            raise AgentkitError(f"{path}: {len(problems)} problem(s), nothing imported:\n  " + "\n  ".join(problems),
                                "fix the entries listed and import again", ExitCode.USAGE)
        for s in staged:
            table.insert(conn, s["name"], s["priority"], s["description"], s["category"], s["steps"], s["meta"],
                         s["status"], s["id"])
        table.add_edges(conn, [(s["id"], dep) for s in staged for dep in sorted(deps[s["id"]])])
        table.refresh_dependents(conn, deps)
        events.record(conn, "task.imported", str(path), count=len(staged), format=source.format)
    renumbered = {str(s["source_id"]): s["id"] for s in staged if source.own_ids and s["source_id"] != s["id"]}
    return {"schema_version": 1, "imported": len(staged), "ids": [s["id"] for s in staged],
            "renumbered": renumbered}
