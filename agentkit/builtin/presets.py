"""The built-in agent presets (claude, codex, aider, gemini, shell)."""

from agentkit.hookspecs import hookimpl
from agentkit.presets import Template


@hookimpl
def register_presets(register) -> None:
    register("shell", Template())
