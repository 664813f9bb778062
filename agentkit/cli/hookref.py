"""Generate the hook reference in docs/plugins.md from agentkit/hookspecs.py (`python -m agentkit.cli.hookref`)."""

import inspect
import re
import sys
import textwrap
from pathlib import Path

PLUGINS_MD = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
MARKER = ("<!-- generated from agentkit/hookspecs.py by python -m agentkit.cli.hookref, which rewrites this file"
          " in place; do not edit below -->")


class _Written(str):
    """A string annotation (`from __future__ import annotations`) printed as written, without quotes."""

    def __repr__(self) -> str:
        return str(self)


def hooks() -> list:
    """The @hookspec functions of agentkit.hookspecs, in declaration order (read now, not at import)."""
    from agentkit import hookspecs

    return [fn for fn in vars(hookspecs).values() if inspect.isfunction(fn) and hasattr(fn, "agentkit_spec")]


def _written(annotation):
    return _Written(annotation) if isinstance(annotation, str) else annotation


def signature(fn) -> str:
    sig = inspect.signature(fn)
    sig = sig.replace(parameters=[p.replace(annotation=_written(p.annotation)) for p in sig.parameters.values()],
                      return_annotation=_written(sig.return_annotation))
    return f"{fn.__name__}{sig}"


def _code(text: str) -> str:
    return re.sub(r"``(.+?)``", r"`\1`", text)


def markdown(doc: str) -> str:
    """reST docstring to markdown: ``code`` becomes `code`, a `::` literal block a ```text block (kept verbatim)."""
    lines, out, i = inspect.cleandoc(doc).splitlines(), [], 0
    while i < len(lines):
        line, i = lines[i], i + 1
        j = i
        while line.endswith("::") and j < len(lines) and (not lines[j].strip() or lines[j][:1].isspace()):
            j += 1
        if not "".join(lines[i:j]).strip():
            out.append(_code(line))
            continue
        # reST: "text::" reads "text:", "text ::" reads "text", a bare "::" disappears.
        head = line[:-2].rstrip() if line[:-2].endswith(" ") or not line[:-2].strip() else line[:-1]
        out += [_code(head)] if head else []
        out += [""] if out and out[-1] else []
        out += ["```text", textwrap.dedent("\n".join(lines[i:j])).strip("\n"), "```"]
        out += [""] if j < len(lines) else []
        i = j
    return "\n".join(out).strip()


def render_hooks() -> str:
    out = ["## Hooks", "",
           "`firstresult` hooks stop at the first implementation that returns something other than `None` and use",
           "that answer; the others call every implementation and collect all answers, in call order.", ""]
    for fn in hooks():
        first = "**firstresult**" if fn.agentkit_spec.get("firstresult") else "not firstresult"
        out += [f"### {fn.__name__}", "", f"`{signature(fn)}` — {first}", "", markdown(fn.__doc__ or ""), ""]
    return "\n".join(out)


def render(current: str) -> str:
    """`current` (docs/plugins.md) with everything below the marker line replaced by the generated reference."""
    found = re.search(r"^<!-- generated from agentkit/hookspecs\.py.*$", current, re.M)
    if not found:
        raise SystemExit(f"docs/plugins.md has no marker line; put it where the generated part starts:\n{MARKER}")
    return f"{current[:found.start()]}{MARKER}\n\n{render_hooks()}"


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else PLUGINS_MD
    path.write_text(render(path.read_text()))
