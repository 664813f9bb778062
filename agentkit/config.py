"""Configuration: defaults < [tool.agentkit] in pyproject.toml < .agents/config.toml < AGENTKIT_* env < flags."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkit.errors import usage

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
}

MINIMUM = {"capacity.floor": 1, "capacity.step": 1, "redis.databases": 1, "ports.block": 1,
           "worktrees.stale_days": 0, "locks.timeout": 1, "tasks.max_attempts": 1,
           "jobs.max_concurrency": 1, "jobs.max_queue_depth": 0}


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


def _coerce(key: str, value: Any, source: str) -> Any:
    default = DEFAULTS[key]
    try:
        if isinstance(default, list):
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            value = [int(v) for v in value]
        elif isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
        elif isinstance(default, int):
            value = int(value)
        else:
            value = str(value)
    except (TypeError, ValueError) as exc:
        raise usage(f"config {key} = {value!r} (from {source}) is not a valid {type(default).__name__}",
                    f"fix it in {source}") from exc
    if key in MINIMUM and value < MINIMUM[key]:
        raise usage(f"config {key} = {value} (from {source}) must be at least {MINIMUM[key]}",
                    f"fix it in {source}")
    return value


def _read_toml(path: Path) -> dict:
    import tomllib

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise usage(f"cannot parse {path}: {exc}", "fix the TOML syntax") from exc


@dataclass
class Config:
    values: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    sources: dict[str, str] = field(default_factory=lambda: dict.fromkeys(DEFAULTS, "default"))

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def set(self, key: str, value: Any, source: str) -> None:
        if key not in DEFAULTS:
            raise usage(f"unknown config key {key!r} in {source}",
                        "see `agentkit config show` for the keys agentkit reads")
        self.values[key] = _coerce(key, value, source)
        self.sources[key] = source

    def show(self) -> list[dict]:
        return [{"key": k, "value": self.values[k], "source": self.sources[k]} for k in DEFAULTS]


def load(root: Path, config_file: Path, overrides: dict[str, Any] | None = None) -> Config:
    cfg = Config()
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {}).get("agentkit", {})
        for key, value in _flatten(tool).items():
            cfg.set(key, value, f"{pyproject} [tool.agentkit]")
    if config_file.is_file():
        for key, value in _flatten(_read_toml(config_file)).items():
            cfg.set(key, value, str(config_file))
    for key in DEFAULTS:
        name = env_name(key)
        if name in os.environ:
            cfg.set(key, os.environ[name], f"env {name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            cfg.set(key, value, "flag")
    return cfg
