"""Agent presets: found by name through the plugin manager; templates rendered into an argv."""

import shlex
import shutil
import string

from agentkit.errors import AgentkitError, ExitCode, usage

PLACEHOLDERS = ("task_id", "task_name", "prompt_file", "worktree", "claim_id", "model", "attempt")
KINDS = ("coding", "testing", "init")


def render(template: str, values: dict) -> list[str]:
    """Split `template` shell-style, then fill each word's {placeholders}: a value with spaces stays one word."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise usage(f"agent template {template!r} does not parse: {exc}",
                    "quote it as a shell would: --agent-cmd 'my-agent --task {task_id}'") from None
    out = []
    for word in words:
        for _, field, _, _ in string.Formatter().parse(word):
            if field is not None and field not in PLACEHOLDERS:
                raise usage(f"agent template {template!r} has an unknown placeholder {{{field}}}",
                            f"placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        out.append(word.format(**{k: values.get(k, "") for k in PLACEHOLDERS}))
    if not out:
        raise usage("the agent template is empty", "for example: --agent-cmd 'my-agent {prompt_file}'")
    return out


def all_presets(repo) -> dict:
    from agentkit.plugins import registered

    return registered(repo.hook.register_presets)


def get(repo, name: str):
    from agentkit.plugins import pick

    return pick(all_presets(repo), name, "agent preset", ", or give --agent-cmd TEMPLATE")


def check_binary(binary: str | None, name: str, hint: str | None = None) -> None:
    """A missing agent binary is an error (exit 6) before anything is claimed."""
    if binary and shutil.which(binary) is None:
        raise AgentkitError(f"agent preset {name!r} needs `{binary}`, which is not on PATH",
                            hint or f"install {binary}, or pick another --agent", ExitCode.NOT_FOUND)


class Template:
    """A preset made of templates, one per kind (coding, testing, init); the exit code alone decides."""

    binary: str | None = None
    login_hint = ""
    install_hint: str | None = None

    def __init__(self, coding: str | None = None, testing: str | None = None, init: str | None = None,
                 binary: str | None = None):
        self.templates = {"coding": coding, "testing": testing, "init": init}
        if binary is not None:
            self.binary = binary

    def command(self, kind: str, values: dict) -> list[str]:
        template = self.templates.get(kind)
        if not template:
            flag = {"coding": "--agent-cmd", "testing": "--testing-cmd", "init": "--init-cmd"}[kind]
            raise usage(f"no {kind} template: this preset has none", f"give {flag} TEMPLATE")
        return render(template, values)

    def classify(self, exit_code: int | None, log_tail: str) -> dict | None:
        return None

    def usage(self, log_text: str) -> dict | None:
        return None


class Overridden:
    """A preset with some of its templates replaced by the user's (--agent-cmd, --testing-cmd, --init-cmd); it
    keeps the preset's reading of exits and usage."""

    def __init__(self, preset, templates: dict):
        self.preset, self.templates = preset, {k: v for k, v in templates.items() if v}
        self.binary = None if "coding" in self.templates else getattr(preset, "binary", None)
        self.login_hint = getattr(preset, "login_hint", "")

    def command(self, kind: str, values: dict) -> list[str]:
        if kind in self.templates:
            return render(self.templates[kind], values)
        return self.preset.command(kind, values)

    def classify(self, exit_code, log_tail):
        return self.preset.classify(exit_code, log_tail)

    def usage(self, log_text):
        return self.preset.usage(log_text)
