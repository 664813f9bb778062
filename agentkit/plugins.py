"""The plugin manager: built-ins, entry points (group "agentkit") and AGENTKIT_PLUGINS."""

import importlib
import os
import sys

import pluggy

from agentkit import hookspecs
from agentkit.errors import usage

# Built-in behaviour is registered exactly like a third-party plugin.
DEFAULT_PLUGINS = (
    "agentkit.builtin.band",
    "agentkit.builtin.ports",
    "agentkit.builtin.provisioners",
    "agentkit.builtin.scoring",
    "agentkit.builtin.local",
    "agentkit.builtin.worktree_jobs",
    "agentkit.builtin.presets",
    "agentkit.builtin.notify",
)

_manager: pluggy.PluginManager | None = None


def _selected() -> set[str] | None:
    raw = os.environ.get("AGENTKIT_PLUGINS")
    return {n.strip() for n in raw.split(",") if n.strip()} if raw is not None else None


def _declares_agentkit_plugins() -> bool:
    """A cheap look before importing importlib.metadata (~10 ms): does any installed distribution on sys.path
    declare an [agentkit] entry point? Most runs have none, and every command pays for this check."""
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(folder or ".", name, "entry_points.txt")) as fh:
                        if "[agentkit]" in fh.read():
                            return True
                except OSError:
                    continue
    return False


def _entry_points() -> list:
    """The installed plugins' entry points (none when autoload is off, or when no distribution declares any)."""
    if os.environ.get("AGENTKIT_DISABLE_PLUGIN_AUTOLOAD") not in (None, "", "0") or not _declares_agentkit_plugins():
        return []
    from importlib.metadata import entry_points

    return list(entry_points(group="agentkit"))


def _unknown(name: str):
    return usage(f"AGENTKIT_PLUGINS names {name!r}, which is neither an installed plugin nor a module",
                 "check `agentkit plugins` for installed names")


def check_selected() -> None:
    """Refuse an AGENTKIT_PLUGINS name that names nothing loadable, without loading any plugin: the commands
    that never load plugins (most built-ins, for speed) refuse it with the same exit 2 as those that do."""
    from importlib.util import find_spec

    unknown = set()
    for name in _selected() or ():
        try:
            if find_spec(name) is None:
                unknown.add(name)
        except (ImportError, ValueError):  # a dotted name whose parent is missing, or an invalid name
            unknown.add(name)
    if unknown:
        unknown -= {ep.name for ep in _entry_points()}
    if unknown:
        raise _unknown(sorted(unknown)[0])


def _load(pm: pluggy.PluginManager) -> None:
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    selected = _selected()
    found = set()
    for ep in _entry_points():
        if selected is not None and ep.name not in selected:
            continue
        found.add(ep.name)
        if pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)
    # Names that are not entry points are importable modules (a local plugin, or one under test).
    for name in sorted((selected or set()) - found):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise _unknown(name) from exc
        if pm.get_plugin(name) is None:
            pm.register(module, name=name)


def get_manager() -> pluggy.PluginManager:
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager("agentkit")
        pm.add_hookspecs(hookspecs)
        _load(pm)
        _manager = pm
    return _manager


def reset() -> None:
    """Forget the loaded plugins (tests change AGENTKIT_PLUGINS between runs)."""
    global _manager
    _manager = None


def describe() -> list[dict]:
    pm = get_manager()
    out = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "builtin": name in DEFAULT_PLUGINS, "hooks": hooks})
    return out


def registered(hook) -> dict:
    """What the implementations of a register-style hook (`register_executors`, `register_presets`, …) register,
    by name. pluggy calls plugins registered later first and the built-ins last, so the first registration of a
    name wins and a plugin can replace a built-in."""
    found: dict = {}
    hook(register=lambda name, obj: found.setdefault(name, obj))
    return found


def pick(found: dict, name: str, what: str, more: str = ""):
    """`found[name]`, or a usage error (exit 2) that lists the names there are."""
    if name not in found:
        raise usage(f"unknown {what} {name!r}", f"choose one of: {', '.join(sorted(found))}{more}")
    return found[name]
