"""Configuration: defaults < [tool.agentkit] in pyproject.toml < .agents/config.toml < AGENTKIT_* env < flags."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkit import durations
from agentkit.errors import ExitCode, not_utf8, os_failure, usage

# Every key agentkit reads, with its default. The type of the default is the type of the value.
DEFAULTS: dict[str, Any] = {
    "worktrees.root": "../{repo}-worktrees",
    "worktrees.branch_prefix": "agent/",
    "worktrees.env_file": ".agent.env",
    "worktrees.stale_days": 14,
    "capacity.floor": 20,
    "capacity.step": 10,
    "redis.url": "",
    "redis.databases": 64,
    "redis.reserved": [0],
    "redis.provisioner": "",
    "redis.conf_path": "",
    "redis.restart_command": "",
    "redis.bind": "127.0.0.1",
    "ports.base": 20000,
    "ports.block": 10,
    "locks.timeout": 60,
    "tasks.max_attempts": 3,
    "claims.lease": "30m",
    "jobs.max_concurrency": 10,
    "jobs.max_queue_depth": 100,
    "jobs.grace": "10s",
    "jobs.timeout": "",
    "jobs.ttl": "7d",
    "jobs.executor": "local",
    "jobs.linger": "2s",
    "jobs.kept_claim_lease": "24h",
    "run.concurrency": 1,
    "run.max_concurrency": 16,
    "run.max_total": 0,
    "run.testing_ratio": 1,
    "run.timeout": "60m",
    "run.init_timeout": "30m",
    "run.agent": "shell",
    "run.agent_cmd": "",
    "run.testing_cmd": "",
    "run.init_cmd": "",
    "run.model": "",
    "run.into": "agentkit/integration",
    "run.notify_cmd": "",
    "run.rate_limit_wait": "5m",
    "docs.agents_pages": [],
}

MINIMUM = {"capacity.floor": 1, "capacity.step": 1, "redis.databases": 1, "ports.block": 1,
           "worktrees.stale_days": 0, "locks.timeout": 1, "tasks.max_attempts": 1,
           "jobs.max_concurrency": 1, "jobs.max_queue_depth": 0, "ports.base": 1,
           "run.concurrency": 1, "run.max_concurrency": 1, "run.max_total": 0, "run.testing_ratio": 0}
INT64 = 2**63 - 1
MAXIMUM = {"ports.base": 65535, "ports.block": 65535,
           "redis.databases": 2**31 - 1,  # Redis's own bound on `databases` (INT_MAX)
           "locks.timeout": int(durations.MAX_SECONDS), "run.testing_ratio": 3}  # past it the lock's timer overflows
DURATIONS = ("claims.lease", "jobs.grace", "jobs.timeout", "jobs.ttl", "jobs.linger", "jobs.kept_claim_lease",
             "run.timeout", "run.init_timeout", "run.rate_limit_wait")  # parsed by agentkit.durations; "" = none
STRING_LISTS = ("docs.agents_pages",)  # list keys of strings; every other list key holds ints


def env_name(key: str) -> str:
    return "AGENTKIT_" + key.upper().replace(".", "_")


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class _Invalid(ValueError):
    """A value that does not fit its key; the text says how (after `config KEY = VALUE (from SOURCE)`)."""


def _int(value: Any) -> int:
    """An int from TOML, or from the text of an env var or a flag; never a bool, a float or a list."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Invalid("is not a valid int")
    try:
        number = int(value)
    except ValueError:
        raise _Invalid("is not a valid int") from None
    if not -INT64 - 1 <= number <= INT64:
        raise _Invalid("is not a valid int: past 64 bits")
    return number


def _float(value: Any) -> float:
    """A finite number from TOML (an int or a float), or from text."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid("is not a valid number")
    try:
        number = float(value)
    except ValueError:
        raise _Invalid("is not a valid number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _Invalid("is not a finite number")
    return number


def _strings(value: Any) -> list[str]:
    """A list of strings from TOML, or comma-separated text (env vars, flags)."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise _Invalid("is not a list of strings")
    return items


def _typed(default: Any, value: Any) -> Any:
    """`value` as the type of `default`: a TOML value must already be of that type (a list of ints, an int, a
    string); text (env vars, flags) is converted."""
    if isinstance(default, list):
        items = [v for v in value.replace(" ", "").split(",") if v] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise _Invalid("is not a list of ints")
        try:
            return [_int(v) for v in items]
        except _Invalid:
            raise _Invalid("is not a list of ints") from None
    if isinstance(default, float):
        return _float(value)
    if isinstance(default, int):
        return _int(value)
    if not isinstance(value, str):
        raise _Invalid("is not a string")
    return value


_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")  # dots between labels: no backtracking blow-up


def _check_bind(value: str) -> None:
    """redis.bind: IP addresses or host names that resolve, space-separated as in redis.conf ('-' = optional)."""
    import ipaddress

    addresses = value.split()
    if not addresses:
        raise _Invalid("is empty: give an IP address or a host name")
    for address in (a.removeprefix("-") for a in addresses):
        try:
            ipaddress.ip_address(address)
            continue
        except ValueError:
            pass
        if not _HOST_NAME.fullmatch(address) or address.rstrip(".").rsplit(".", 1)[-1].isdigit():
            raise _Invalid(f"is not an IP address or a host name: {address!r}")
        import socket

        try:
            socket.getaddrinfo(address, None)
        except (OSError, UnicodeError):
            raise _Invalid(f"names host {address!r}, which does not resolve") from None


def _check_root(value: str) -> None:
    if not value.strip():
        raise _Invalid("is empty: give a folder, relative to the main checkout or absolute")
    try:
        value.format(repo="repo")
    except (KeyError, IndexError, ValueError, AttributeError):
        raise _Invalid("may hold {repo} and no other {…} field (write {{ and }} for braces)") from None


def _check_file_name(value: str) -> None:
    if value in ("", ".", "..") or "/" in value or "\0" in value:
        raise _Invalid("must be a plain file name (no '/'): the file is written inside each worktree")


def _check_url(value: str) -> None:
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise _Invalid("is not a redis://, rediss:// or unix:// URL (or empty, for the managed Redis)")


def _check_reserved(value: list[int]) -> None:
    if any(not 0 <= db <= MAXIMUM["redis.databases"] for db in value):
        raise _Invalid("must hold Redis DB numbers (0 or more)")


def _check_pages(value: list[str]) -> None:
    for page in value:
        parts = page.replace("\\", "/").split("/")
        if page.startswith("/") or ".." in parts or "\0" in page:
            raise _Invalid(f"must hold paths relative to the repository root, inside it: {page!r}")


CHECKS = {"worktrees.root": _check_root, "worktrees.env_file": _check_file_name, "redis.url": _check_url,
          "redis.bind": _check_bind, "redis.reserved": _check_reserved, "docs.agents_pages": _check_pages}


def plugin_defaults() -> dict[str, Any]:
    """The keys plugins declare (hook `config_keys`) with their defaults. It loads the plugins, so it is asked only
    for a key that is not one of agentkit's own."""
    from agentkit.plugins import get_manager

    found: dict[str, Any] = {}
    for answer in get_manager().hook.config_keys():
        for key, default in (answer or {}).items():
            if key not in DEFAULTS:
                found.setdefault(key, default)
    return found


def _coerce(key: str, value: Any, source: str, default: Any = None) -> Any:
    """A value from `source` for `key`, type-checked and validated (defaults are not: they are known good)."""
    shown = value
    default = DEFAULTS[key] if key in DEFAULTS else default
    try:
        strings = key in STRING_LISTS or (key not in DEFAULTS and isinstance(default, list))  # a plugin's lists
        value = _strings(value) if strings else _typed(default, value)
        if key in MINIMUM and value < MINIMUM[key]:
            raise _Invalid(f"must be at least {MINIMUM[key]}")
        if key in MAXIMUM and value > MAXIMUM[key]:
            raise _Invalid(f"must be at most {MAXIMUM[key]}")
        if key in CHECKS:
            CHECKS[key](value)
    except _Invalid as exc:
        if key == "redis.url":
            from agentkit.redis import redacted

            shown = redacted(str(shown))
        raise usage(f"config {key} = {shown!r} (from {source}) {exc}",
                    f"fix it in {source}" + (f" (the default is {default!r})" if default not in ("", [], None) else "")
                    ) from None
    if key in DURATIONS and value:
        durations.parse(value, f"config {key} (from {source})")
    return value


def _read_toml(path: Path) -> dict | None:
    """A TOML file's tables, or None when there is no such file."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise os_failure(exc, f"config file {path}", ExitCode.USAGE) from exc
    import tomllib  # only when there is a file: most commands (and every supervisor) run without one

    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, "TOML") from exc
    except tomllib.TOMLDecodeError as exc:
        raise usage(f"cannot parse {path}: {exc}", "fix the TOML syntax") from exc


@dataclass
class Config:
    values: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    sources: dict[str, str] = field(default_factory=lambda: dict.fromkeys(DEFAULTS, "default"))

    def __getitem__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            pass
        defaults = plugin_defaults()  # a plugin's key that no file set: its env var, or the plugin's default
        if key not in defaults:
            raise KeyError(key)
        if env_name(key) in os.environ:
            self.set(key, os.environ[env_name(key)], f"env {env_name(key)}")
        else:
            self.values[key], self.sources[key] = defaults[key], "default"
        return self.values[key]

    def set(self, key: str, value: Any, source: str) -> None:
        default = None
        if key not in DEFAULTS:
            plugin_keys = plugin_defaults()
            if key not in plugin_keys:
                raise usage(f"unknown config key {key!r} in {source}",
                            "see `agentkit config show` for the keys agentkit and its plugins read")
            default = plugin_keys[key]
        self.values[key] = _coerce(key, value, source, default)
        self.sources[key] = source

    def show(self) -> list[dict]:
        """Every key with its value and source; a password in redis.url is shown as *** (this is printed)."""
        def shown(key: str):
            if key == "redis.url" and self.values[key]:
                from agentkit.redis import redacted

                return redacted(self.values[key])
            return self.values[key]

        keys = [*DEFAULTS, *plugin_defaults()]
        return [{"key": k, "value": shown(k) if k in DEFAULTS else self[k], "source": self.sources[k]} for k in keys]


def load(root: Path, config_file: Path, overrides: dict[str, Any] | None = None) -> Config:
    cfg = Config()
    pyproject = root / "pyproject.toml"
    tool = (_read_toml(pyproject) or {}).get("tool")
    tool = tool.get("agentkit", {}) if isinstance(tool, dict) else {}
    if not isinstance(tool, dict):
        raise usage(f"tool.agentkit in {pyproject} is not a table", "write it as a [tool.agentkit] table")
    for key, value in _flatten(tool).items():
        cfg.set(key, value, f"{pyproject} [tool.agentkit]")
    for key, value in _flatten(_read_toml(config_file) or {}).items():
        cfg.set(key, value, str(config_file))
    for key in DEFAULTS:
        name = env_name(key)
        if name in os.environ:
            cfg.set(key, os.environ[name], f"env {name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            cfg.set(key, value, "flag")
    return cfg
