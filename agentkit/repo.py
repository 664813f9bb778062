"""The repository agentkit works on: its paths, merged config, state store and plugin manager."""

from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import Any

from agentkit import config as config_mod
from agentkit.state.paths import Paths, resolve


class Repo:
    def __init__(self, start: Path | None = None, overrides: dict[str, Any] | None = None):
        self.paths: Paths = resolve(start)
        self.config = config_mod.load(self.paths.root, self.paths.config_file, overrides)

    @property
    def root(self) -> Path:
        return self.paths.root

    @cached_property
    def store(self):
        from agentkit.state.store import open_store

        return open_store(self.paths)

    @cached_property
    def hook(self):
        from agentkit.plugins import get_manager

        return get_manager().hook

    def lock(self, name: str) -> AbstractContextManager[None]:
        from agentkit.state.locks import named_lock

        return named_lock(self.paths.agents, name, timeout=self.config["locks.timeout"])

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
