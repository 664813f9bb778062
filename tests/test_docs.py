"""Docs that match the code: `agentkit install-docs`, and the generated references in docs/."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from agentkit import docs, hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_install_docs_creates_then_refreshes_keeping_user_text(repo, cli):
    res = cli("install-docs", "--json")
    assert res.code == 0 and res.json["written"] is True
    text = (repo / "AGENTS.md").read_text()
    assert docs.BEGIN in text and "REDIS_URL" in text
    assert cli("install-docs", "--check").code == 0, "up to date after install"

    (repo / "AGENTS.md").write_text("# Our rules\n\nRun make lint.\n\n" + text.replace("REDIS_URL", "OLD"))
    assert cli("install-docs", "--check").code == 1
    dry = cli("install-docs", "--dry-run", "--json").json
    assert {k: dry[k] for k in ("schema_version", "path", "changed", "written", "pages")} == {
        "schema_version": 1, "path": str(repo / "AGENTS.md"), "changed": True, "written": False, "pages": []}
    assert dry["diff"]["added"] >= 1 and dry["diff"]["removed"] >= 1
    assert cli("install-docs").code == 0
    new = (repo / "AGENTS.md").read_text()
    assert new.startswith("# Our rules\n\nRun make lint.\n") and "OLD" not in new and new.count(docs.BEGIN) == 1


def test_bin_shim_and_console_script(repo):
    shim = Path(__file__).resolve().parents[1] / "bin" / "install-agent-docs"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert subprocess.run([str(shim)], cwd=repo, env=env, capture_output=True).returncode == 0
    assert (repo / "AGENTS.md").is_file()
    script = Path(sys.executable).parent / "install-agent-docs"
    done = subprocess.run([str(script), "--check"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_reference_is_current():
    from agentkit.cli.reference import render

    assert (DOCS / "cli.md").read_text() == render(), "regenerate: python -m agentkit.cli.reference > docs/cli.md"


def test_plugins_hook_reference_is_current():
    from agentkit.cli.hookref import render

    text = (DOCS / "plugins.md").read_text()
    assert text == render(text), "regenerate: python -m agentkit.cli.hookref (rewrites docs/plugins.md in place)"


def test_every_hook_has_a_section_and_every_section_is_a_hook():
    specs = [name for name, fn in vars(hookspecs).items() if hasattr(fn, "agentkit_spec")]
    sections = re.findall(r"^### (\S+)$", (DOCS / "plugins.md").read_text(), re.M)
    assert "band_target" in specs and "register_executors" in specs
    assert sorted(set(specs) - set(sections)) == [], "hooks without a section in docs/plugins.md"
    assert sorted(set(sections) - set(specs)) == [], "sections in docs/plugins.md that are not hooks"


def _reference_sections() -> dict[str, str]:
    """docs/cli.md's sections by command path (`agentkit worktree up`), each with its text."""
    parts = re.split(r"^## `(agentkit[^`]*)`$", (DOCS / "cli.md").read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_command_the_docs_tell_people_to_run_exists_with_its_options():
    """A recovery step that names a command or an option agentkit does not have is worse than none."""
    sections = _reference_sections()
    checked = 0
    for page, text in _hand_written().items():
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
        commands = [ln.removeprefix("$ ") for b in blocks for ln in b.splitlines()]  # commands, not their output
        commands += re.findall(r"`([^`\n]+)`", text)  # inline code
        for line in (c.split("#")[0] for c in commands if c.startswith("agentkit ") and "…" not in c):
            words = line.split()
            path = next((" ".join(words[:n]) for n in (4, 3, 2) if " ".join(words[:n]) in sections), None)
            assert path, f"{page}: `{line.strip()}` names no agentkit command"
            own = re.sub(r"'[^']*'|\"[^\"]*\"", "", line).split(" -- ")[0]  # not a quoted or a spawned command's
            for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", own):
                if option != "--help":
                    assert f"`{option}`" in sections[path], f"{page}: `{path}` has no option {option}"
            checked += 1
    assert checked > 100


def test_install_agent_docs_shares_the_command_line_boundary(repo):
    """The third console script checks what the other two check: an unknown AGENTKIT_PLUGINS name is exit 2."""
    script = Path(sys.executable).parent / "install-agent-docs"
    env = {**os.environ, "AGENTKIT_PLUGINS": "no_such_plugin_anywhere"}
    done = subprocess.run([str(script), "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "no_such_plugin_anywhere" in json.loads(done.stdout)["error"]["message"]
    assert not (repo / "AGENTS.md").exists() and "Traceback" not in done.stderr


# --- AGENTS.md made of docs/ pages -------------------------------------------------------------------------------

def _pages_repo(repo: Path) -> list[str]:
    (repo / "docs").mkdir()
    (repo / "docs" / "intro.md").write_text("# Intro\n\nSee [the guide](guide.md#setup), [home](../README.md), "
                                            "[web](https://example.com/x.md) and [here](#intro).\n\n"
                                            "```sh\n# a comment, not a heading\n```\n")
    (repo / "docs" / "guide.md").write_text("# Guide\n\n## Setup\n\nRun it.\n\n[ref]: intro.md\n")
    return ["docs/intro.md", "docs/guide.md"]


def test_agents_md_from_pages_in_order_with_links_that_resolve_from_the_root(repo, cli):
    pages = _pages_repo(repo)
    (repo / ".agents").mkdir(exist_ok=True)
    (repo / ".agents" / "config.toml").write_text(f"[docs]\nagents_pages = {pages!r}\n".replace("'", '"'))
    (repo / "AGENTS.md").write_text("# Rules\n\nOurs.\n")
    res = cli("install-docs", "--json")
    assert res.code == 0 and res.json["written"] is True and res.json["pages"] == pages
    text = (repo / "AGENTS.md").read_text()
    assert text.startswith("# Rules\n\nOurs.\n\n" + docs.BEGIN)
    body = text[text.index(docs.BEGIN):]
    assert body.index("<!-- from docs/intro.md -->") < body.index("## Intro") < body.index("## Guide")
    assert "### Setup" in body and "\n# a comment, not a heading\n" in body, "headings down one level, code kept"
    assert "[the guide](docs/guide.md#setup)" in body and "[home](README.md)" in body
    assert "(https://example.com/x.md)" in body and "[here](#intro)" in body and "[ref]: docs/intro.md" in body
    assert "REDIS_URL" not in body, "pages replace the built-in section"

    first = (repo / "AGENTS.md").read_bytes()
    assert cli("install-docs").code == 0 and (repo / "AGENTS.md").read_bytes() == first, "same input, same bytes"
    assert docs.render(first.decode(), repo, pages) == first.decode()

    (repo / "docs" / "guide.md").write_text("# Guide\n\n## Setup\n\nRun it twice.\n")
    res = cli("install-docs", "--check")
    assert res.code == 1 and (repo / "AGENTS.md").read_bytes() == first, "--check changes nothing"
    assert "is out of date" in res.err and "1 line(s) to add" in res.err and "+Run it twice." in res.err
    res = cli("install-docs", "--check", "--json")
    assert res.code == 1 and res.json["changed"] is True and res.json["written"] is False
    assert res.json["diff"]["added"] == 1 and res.json["diff"]["removed"] == 3
    assert "-Run it." in res.json["diff"]["first"] and "+Run it twice." in res.json["diff"]["first"]
    assert cli("install-docs").code == 0 and cli("install-docs", "--check").code == 0
    assert cli("install-docs", "--check", "--json").json["diff"] is None


def test_bin_shim_check_exits_1_when_stale(repo):
    shim = ROOT / "bin" / "install-agent-docs"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    (repo / "AGENTS.md").write_text(docs.render(None).replace("REDIS_URL", "OLD_NAME"))
    done = subprocess.run([str(shim), "--check"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "-" in done.stderr and "OLD_NAME" in done.stderr
    assert subprocess.run([str(shim)], cwd=repo, env=env, capture_output=True).returncode == 0
    assert subprocess.run([str(shim), "--check"], cwd=repo, env=env, capture_output=True).returncode == 0


def test_a_missing_page_or_a_bad_page_list_exits_2(repo, cli):
    res = cli("install-docs", "--json", env={"AGENTKIT_DOCS_AGENTS_PAGES": "docs/nope.md"})
    assert res.code == 2 and "docs/nope.md" in res.json["error"]["message"]
    assert not (repo / "AGENTS.md").exists()
    res = cli("install-docs", env={"AGENTKIT_DOCS_AGENTS_PAGES": "../outside.md"})
    assert res.code == 2 and "docs.agents_pages" in res.err
    (repo / ".agents").mkdir(exist_ok=True)
    (repo / ".agents" / "config.toml").write_text("[docs]\nagents_pages = [1]\n")
    res = cli("install-docs")
    assert res.code == 2 and "is not a list of strings" in res.err


def test_install_docs_writes_the_current_worktree_not_the_main_checkout(repo, cli):
    from tests.conftest import git

    other = repo.parent / "linked"
    git(repo, "worktree", "add", "-q", str(other), "-b", "linked")
    assert cli("install-docs", cwd=other).code == 0
    assert (other / "AGENTS.md").is_file() and not (repo / "AGENTS.md").exists()


def test_this_repos_agents_md_is_current():
    pages = docs.own_pages(ROOT)
    assert pages and all((ROOT / p).is_file() for p in pages)
    text = (ROOT / "AGENTS.md").read_text()
    assert docs.render(text, ROOT, pages) == text, "AGENTS.md is stale: run python -m agentkit.docs"


# --- nothing exists without its place in docs/, no link points nowhere -------------------------------------------

def _hand_written() -> dict[str, str]:
    """Every page people write (cli.md is generated from the CLI), README.md and AGENTS.md, by repo path."""
    pages = {f"docs/{p.name}": p.read_text() for p in sorted(DOCS.glob("*.md")) if p.name != "cli.md"}
    return {**pages, "README.md": (ROOT / "README.md").read_text()}


def _commands() -> list:
    """Every command path of the CLI (`task dep add`), derived from the typer app: leaves, and groups that take
    options of their own (`scale --provision`)."""
    import typer

    from agentkit.cli import app

    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if path and (not subs or any(p.name != "help" for p in cmd.params)):
            out.append(path)
        for name, sub in sorted((subs or {}).items()):
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return out


def test_every_command_has_its_reference_section_and_a_hand_written_mention():
    sections = _reference_sections()
    text = "\n".join(_hand_written().values())
    inline = re.findall(r"`([^`\n]+)`", text)
    commands = _commands()
    assert "task dep add" in commands and "worktree new" in commands and "scale" in commands
    for path in commands:
        assert f"agentkit {path}" in sections, f"`agentkit {path}` has no section in docs/cli.md: regenerate it"
        mentioned = re.search(rf"agentkit {re.escape(path)}(?![\w-])", text) or any(
            re.match(rf"(agentkit )?{re.escape(path)}(?![\w-])", code) for code in inline)
        assert mentioned, f"`agentkit {path}` is in no hand-written page (docs/index.md lists each command's page)"


def test_every_config_key_has_its_row_in_config_md():
    from agentkit import config

    text = (DOCS / "config.md").read_text()
    rows = {key for cell in re.findall(r"^\| (`[^|]+`) \|", text, re.M) for key in re.findall(r"`([^`]+)`", cell)}
    assert sorted(set(config.DEFAULTS) - rows) == [], "config keys without a row in docs/config.md"
    assert sorted(rows - set(config.DEFAULTS)) == [], "rows in docs/config.md that are not config keys"


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    heads = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_link_resolves_to_a_file_and_its_anchor():
    import posixpath

    pages = {**_hand_written(), "docs/cli.md": (DOCS / "cli.md").read_text(), "AGENTS.md": (ROOT / "AGENTS.md")
             .read_text()}
    checked = 0
    for name, text in pages.items():
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", prose, re.M):
            if re.match(r"[A-Za-z][\w+.-]*:", target):
                continue
            path, _, anchor = target.partition("#")
            where = posixpath.normpath(posixpath.join(posixpath.dirname(name), path)) if path else name
            assert (ROOT / where).exists(), f"{name} links to {target}, which does not exist"
            if anchor and where.endswith(".md"):
                assert anchor in _anchors((ROOT / where).read_text()), f"{name}: {target} has no such heading"
            checked += 1
    assert checked > 50


def test_index_lists_every_page_and_readme_links_each():
    index = (DOCS / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    pages = {f"{p.name}" for p in DOCS.glob("*.md")}
    listed = set(re.findall(r"^- \[[^\]]+\]\(([\w.-]+\.md)\)", index, re.M))
    assert sorted(pages - listed) == [], "pages missing from docs/index.md"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", readme))
    assert sorted(pages - linked) == [], "pages the README does not link"
    assert readme.index("make demo") < readme.index("make test") < readme.index("## A two-minute tour")


# --- the example plugins in docs/plugins.md are loaded and exercised -------------------------------------------

def _example(name: str) -> str:
    found = re.search(rf"^<!-- example: {re.escape(name)} .*?-->\n```python\n(.*?)^```$",
                      (DOCS / "plugins.md").read_text(), re.M | re.S)
    assert found, f"docs/plugins.md has no block marked <!-- example: {name} -->"
    return found.group(1)


def test_example_capacity_policy_caps_the_band(repo, cli, tmp_path):
    from tests.conftest import write_plugin

    env = {**write_plugin(tmp_path, "max_slots", _example("max_slots.py")), "MAX_SLOTS": "4",
           "AGENTKIT_CAPACITY_FLOOR": "2"}
    listed = cli("plugins", "--json", env=env).json["plugins"]
    assert {"name": "max_slots", "builtin": False, "hooks": ["band_target"]} in listed
    for slug in "abcd":
        res = cli("worktree", "new", slug, "--json", env=env)
        assert res.code == 0, res.err
        if slug == "c":
            assert res.json["band_change"]["from"] == 2 and res.json["band_change"]["to"] == 4
    res = cli("worktree", "new", "e", "--json", env=env)
    assert res.code == 3 and res.json["error"]["name"] == "capacity", res.err
    assert "will not grow past 4 slots" in res.json["error"]["message"]
    assert cli("scale", "status", "--json", env=env).json["current"] == 4
    without = {"AGENTKIT_CAPACITY_FLOOR": "2"}
    res = cli("worktree", "new", "e", "--json", env=without)
    assert res.code == 0 and res.json["band_change"]["to"] == 14, "the built-in band grows by a step"


def test_example_grow_by_five(repo, cli, tmp_path):
    from tests.conftest import write_plugin

    env = {**write_plugin(tmp_path, "grow_by_five", _example("grow_by_five.py")), "AGENTKIT_CAPACITY_FLOOR": "2"}
    for slug in "ab":
        assert cli("worktree", "new", slug, env=env).code == 0
    res = cli("worktree", "new", "c", "--json", env=env)
    assert res.code == 0 and res.json["band_change"] == {"from": 2, "to": 7, "reason": "allocating for c"}


def test_a_lost_marker_is_mended_once_and_the_file_then_stays_put(tmp_path):
    """An AGENTS.md whose begin marker was edited away (its end kept) gets one fresh block, not one per run."""
    once = docs.render(None)
    damaged = once.replace(docs.BEGIN + "\n", "my notes\n")
    mended = docs.render(damaged)
    assert mended.count(docs.BEGIN) == 1 and mended.count(docs.END) == 1 and "my notes" in mended
    assert docs.render(mended) == mended


def test_page_links_are_rewritten_outside_code_titled_ones_too_and_long_fences_hold(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "p.md").write_text(
        "# P\n\nSee [a](a.md), [b](b.md \"Title\") and `[c](c.md)` as written.\n\n"
        "````md\n```\n# inside\n```\n[d](d.md)\n````\n\n## After\n")
    got = docs.page_section(tmp_path, "docs/p.md")
    assert "[a](docs/a.md)" in got and '[b](docs/b.md "Title")' in got
    assert "`[c](c.md)`" in got, "a code span is copied as it is"
    assert "\n# inside\n" in got and "\n[d](d.md)\n" in got, "the inner ``` does not close the ```` fence"
    assert "\n### After" in got and "\n## P" in got
