"""One read of everything a dashboard or script wants to know, as a versioned document (docs/snapshot.md)."""

import re
from collections.abc import Callable

from agentkit import capacity, claims, jobs, redis, worktrees
from agentkit.errors import usage

SCHEMA_VERSION = 1

# The top-level keys core writes; a plugin section may not take one (docs/snapshot.schema.json).
CORE_KEYS = ("schema_version", "repo", "worktrees", "capacity", "redis", "tasks", "jobs", "warnings")
SECTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

# Older shapes still served by `snapshot --schema-version N`: N -> a function turning the current document into
# version N's shape. When a breaking change bumps SCHEMA_VERSION, the previous version gets its function here and
# stays for one major version of agentkit.
_OLDER: dict[int, Callable[[dict], dict]] = {}


def supported_versions() -> list[int]:
    return sorted({SCHEMA_VERSION, *_OLDER})


def _checked(schema_version: int) -> int:
    if schema_version not in supported_versions():
        shown = ", ".join(map(str, supported_versions()))
        raise usage(f"snapshot schema version {schema_version} is not supported (this agentkit serves: {shown})",
                    f"pass --schema-version {SCHEMA_VERSION} (the current one), or upgrade agentkit for a newer one")
    return schema_version


def snapshot(repo, schema_version: int = SCHEMA_VERSION) -> dict:
    """Read-only and fast: state and git only; Redis is not asked (physical_max is the last value seen)."""
    version = _checked(schema_version)
    doc = _current(repo)
    return doc if version == SCHEMA_VERSION else {**_OLDER[version](doc), "schema_version": version}


def _current(repo) -> dict:
    cap = capacity.status(repo, live=False)
    cap.pop("schema_version", None)
    red = redis.status(repo, live=False)
    out = {"schema_version": SCHEMA_VERSION, "repo": str(repo.root),
           "worktrees": worktrees.list_all(repo),
           "capacity": {k: v for k, v in cap.items() if k != "slots"},
           "redis": {"url": redis.redacted(red["url"]) if red["url"] else None,
                     "managed": red["managed"], "running": red["running"]},
           "tasks": {k: v for k, v in claims.task_status(repo).items() if k != "schema_version"},
           "jobs": {**{k: v for k, v in jobs.health(repo).items() if k != "schema_version"},
                    "active_jobs": jobs.list_jobs(repo, "running") + jobs.list_jobs(repo, "queued")},
           "warnings": []}
    _add_plugin_sections(repo, out)
    return out


def _add_plugin_sections(repo, out: dict) -> None:
    """Each `snapshot_sections` answer's keys become top-level sections. A name core uses, one another plugin
    already gave, or one outside SECTION_NAME is left out with a warning naming the plugin: a plugin can add to
    the document, never change what core or another plugin wrote."""
    owners: dict[str, str] = {}
    for impl in reversed(repo.hook.snapshot_sections.get_hookimpls()):  # the order pluggy calls them in
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue
        answer = impl.function(**{name: repo for name in impl.argnames if name == "repo"})
        if answer is None:
            continue
        plugin = impl.plugin_name
        if not isinstance(answer, dict):
            out["warnings"].append(f"plugin {plugin}: snapshot_sections returned {type(answer).__name__}, "
                                   "not a dict of sections; left out")
            continue
        for name, data in answer.items():
            if not isinstance(name, str) or not SECTION_NAME.fullmatch(name):
                why = "is not a section name (lowercase letters, digits and _, starting with a letter)"
            elif name in CORE_KEYS:
                why = "is a core section"
            elif name in owners:
                why = f"was already given by plugin {owners[name]}"
            else:
                owners[name] = plugin
                out[name] = data
                continue
            out["warnings"].append(f"plugin {plugin}: section {name!r} {why}; left out")
