"""The built-in agent presets: the argv each runs per kind, how each reads its agent's exit, and its usage."""

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentkit import plugins, presets
from agentkit.builtin.presets import reset_at
from agentkit.errors import AgentkitError, ExitCode

NAMES = ("claude", "codex", "aider", "gemini", "shell")
AGENTS = NAMES[:4]
PROMPT = "/work/my repo/.agents/wt/7/prompt.md"  # a space: the path must stay one word
VALUES = {"task_id": "7", "task_name": "add login", "prompt_file": PROMPT, "worktree": "/work/my repo/.agents/wt/7",
          "claim_id": "c-1", "model": "", "attempt": "1"}
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


def preset(name):
    return presets.get(plugins.get_manager(), name)


def utc(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def claude_result(result: str, is_error: bool, **extra) -> str:
    """A result object as `claude -p --output-format json` prints it (fields trimmed)."""
    return json.dumps({"type": "result", "subtype": "success", "is_error": is_error, "api_error_status": None,
                       "duration_ms": 167, "num_turns": 1, "result": result, "total_cost_usd": 0,
                       "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                 "output_tokens": 0}, **extra}, ensure_ascii=False)


def jsonl(*events) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


# --- registration and argv ---------------------------------------------------------------------------------------

def test_all_five_are_registered_and_the_agents_name_their_binary_login_and_install():
    found = presets.all_presets(plugins.get_manager())
    assert set(NAMES) <= set(found)
    for name in AGENTS:
        assert found[name].binary == name
        assert found[name].login_hint and found[name].install_hint
    assert "claude" in found["claude"].login_hint and "/login" in found["claude"].login_hint
    assert "codex login" in found["codex"].login_hint
    assert found["claude"].install_hint == "npm install -g @anthropic-ai/claude-code"
    assert found["codex"].install_hint == "npm install -g @openai/codex"
    assert found["gemini"].install_hint == "npm install -g @google/gemini-cli"
    assert "aider" in found["aider"].install_hint
    assert found["shell"].binary is None


EXPECTED_CODING = {
    "claude": ["claude", "-p", f"Read {PROMPT} and do the task it describes in this worktree; commit your work and "
               "report the outcome as it says.", "--output-format", "json", "--permission-mode", "acceptEdits",
               "--allowedTools", "Bash"],
    "codex": ["codex", "exec", "--json", "--sandbox", "danger-full-access", "--cd", VALUES["worktree"],
              f"Read {PROMPT} and do the task it describes in this worktree; commit your work and report the outcome "
              "as it says."],
    "aider": ["aider", "--message-file", PROMPT, "--yes-always", "--auto-commits", "--no-gitignore", "--no-pretty",
              "--no-stream", "--no-check-update", "--no-show-release-notes", "--no-analytics", "--no-detect-urls"],
    "gemini": ["gemini", "-p", f"Read {PROMPT} and do the task it describes in this worktree; commit your work and "
               "report the outcome as it says.", "--approval-mode", "yolo", "--skip-trust", "--output-format", "json"],
}


@pytest.mark.parametrize("name", AGENTS)
def test_coding_argv_is_the_headless_unattended_invocation(name):
    assert preset(name).command("coding", VALUES) == EXPECTED_CODING[name]


@pytest.mark.parametrize("name", AGENTS)
@pytest.mark.parametrize("kind", presets.KINDS)
def test_every_kind_reads_the_prompt_file_and_adds_the_model_only_when_given(name, kind):
    argv = preset(name).command(kind, VALUES)
    assert argv[0] == name
    assert "--model" not in argv
    assert any(PROMPT in word for word in argv), "the prompt file, one word or inside the instruction"
    with_model = preset(name).command(kind, {**VALUES, "model": "big-model-1"})
    assert with_model == argv + ["--model", "big-model-1"]


@pytest.mark.parametrize("name", ("claude", "codex", "gemini"))
def test_the_instruction_differs_per_kind(name):
    asks = {kind: preset(name).command(kind, VALUES) for kind in presets.KINDS}
    assert len({tuple(a) for a in asks.values()}) == 3
    assert "verify" in " ".join(asks["testing"]) and "spec" in " ".join(asks["init"])


def test_aider_reads_the_prompt_file_itself_for_every_kind():
    argvs = [preset("aider").command(kind, VALUES) for kind in presets.KINDS]
    assert argvs[0] == argvs[1] == argvs[2]
    assert argvs[0][1:3] == ["--message-file", PROMPT] and "--no-auto-commits" not in argvs[0]


@pytest.mark.parametrize("kind", presets.KINDS)
def test_shell_has_no_templates_and_says_which_flag_gives_one(kind):
    with pytest.raises(AgentkitError) as exc:
        preset("shell").command(kind, VALUES)
    assert exc.value.code == ExitCode.USAGE
    assert {"coding": "--agent-cmd", "testing": "--testing-cmd", "init": "--init-cmd"}[kind] in exc.value.hint


def test_overridden_templates_keep_the_presets_reading_of_exits_and_usage():
    claude = preset("claude")
    mine = presets.Overridden(claude, {"coding": "my-agent --task {task_id} {prompt_file}", "testing": None})
    assert mine.command("coding", VALUES) == ["my-agent", "--task", "7", PROMPT]
    assert mine.command("testing", VALUES) == claude.command("testing", VALUES)
    assert mine.binary is None, "the user's coding command replaces the binary that must be on PATH"
    assert mine.login_hint == claude.login_hint
    out = claude_result("Not logged in · Please run /login", True)
    assert mine.classify(1, out)["kind"] == "login"
    assert mine.usage(claude_result("done", False, total_cost_usd=0.5)) == {
        "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.5}
    kept = presets.Overridden(claude, {"testing": "my-tester {prompt_file}"})
    assert kept.binary == "claude" and kept.command("testing", VALUES) == ["my-tester", PROMPT]


def test_a_missing_binary_is_an_error_naming_the_install_step(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AgentkitError) as exc:
        presets.check_binary(preset("codex").binary, "codex", preset("codex").install_hint)
    assert exc.value.code == ExitCode.NOT_FOUND and "`codex`" in exc.value.message
    assert exc.value.hint == "npm install -g @openai/codex"
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert presets.check_binary(preset("codex").binary, "codex") is None
    assert presets.check_binary(preset("shell").binary, "shell") is None


# --- classify: what each agent prints ----------------------------------------------------------------------------

CLAUDE_NOT_LOGGED_IN = (  # claude 2.1 with HOME empty and no ANTHROPIC_API_KEY, exit 1
    '{"type":"result","subtype":"success","is_error":true,"api_error_status":null,"duration_ms":167,'
    '"duration_api_ms":0,"num_turns":1,"result":"Not logged in · Please run /login","stop_reason":"stop_sequence",'
    '"session_id":"1c48b976-dd43-4259-8b32-b7f19f6b3226","total_cost_usd":0,"usage":{"input_tokens":0,'
    '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0},"modelUsage":{},'
    '"permission_denials":[],"terminal_reason":"completed"}\n')
GEMINI_NO_AUTH = """YOLO mode is enabled. All tool calls will be automatically approved.
{
  "session_id": "a380ebb7-01a2-4d78-aad7-234c7ab0ce5f",
  "error": {
    "type": "Error",
    "message": "Please set an Auth method in your /tmp/h/.gemini/settings.json or specify one of the following \
environment variables before running: GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA",
    "code": 41
  }
}
"""
AIDER_NO_KEY = """Warning: claude-sonnet-4-5 expects these environment variables
- ANTHROPIC_API_KEY: Not set
Aider v0.86.2
Main model: claude-sonnet-4-5 with diff edit format, infinite output
Git repo: .git with 0 files

litellm.AuthenticationError: Missing Anthropic API Key - A call is being made to
anthropic but no key is set either in the environment variables or via params.
Please set `ANTHROPIC_API_KEY` in your environment vars
The API provider is not able to authenticate you. Check your API key.
"""
AIDER_NO_MODEL = """No LLM model was specified and no API keys were provided.
OpenRouter provides free and paid access to many LLMs.

Please open this URL in your browser to connect Aider with OpenRouter:

https://openrouter.ai/auth?callback_url=http://localhost:8484/callback/aider&code_challenge=x

Waiting up to 5 minutes for you to finish in the browser...
"""
CODEX_NO_NETWORK = jsonl(  # codex exec --json with no network: it retries for ever (the run's timeout ends it)
    {"type": "thread.started", "thread_id": "01a23434"}, {"type": "turn.started"},
    {"type": "error", "message": "Reconnecting... 5/5 (stream disconnected before completion: failed to lookup "
                                 "address information: Name does not resolve)"},
    {"type": "error", "message": "Reconnecting... waiting for network (Connection failed: error sending request)"})


def until_of(name, exit_code, out):
    found = preset(name).classify(exit_code, out)
    assert found and found["kind"] == "rate_limited", found
    return found["until"]


@pytest.mark.parametrize(("name", "exit_code", "out", "said"), [
    ("claude", 1, CLAUDE_NOT_LOGGED_IN, "Not logged in · Please run /login"),
    ("claude", 1, "Not logged in · Please run /login\n", "Not logged in · Please run /login"),
    ("claude", 1, claude_result("Invalid API key · Please run /login", True), "Invalid API key · Please run /login"),
    ("claude", 1, claude_result("OAuth token has expired. Session expired. Please run /login to sign in again.", True),
     "Please run /login"),
    ("claude", 1, claude_result("API Error: 401 {\"type\":\"error\",\"error\":{\"type\":\"authentication_error\"}}",
                                True), "API Error: 401"),
    ("codex", 1, jsonl({"type": "thread.started", "thread_id": "t"},
                       {"type": "error", "message": "unexpected status 401 Unauthorized: Missing bearer or basic "
                                                    "authentication in header"},
                       {"type": "turn.failed", "error": {"message": "unexpected status 401 Unauthorized"}}),
     "401 Unauthorized"),
    ("codex", 1, "Error: Missing environment variable: `OPENAI_API_KEY`.\n", "OPENAI_API_KEY"),
    ("gemini", 41, GEMINI_NO_AUTH, "Please set an Auth method"),
    ("gemini", 41, "", "exited 41"),
    ("aider", 0, AIDER_NO_KEY, "litellm.AuthenticationError: Missing Anthropic API Key"),
    ("aider", None, AIDER_NO_MODEL, "No LLM model was specified"),
])
def test_not_logged_in(name, exit_code, out, said):
    found = preset(name).classify(exit_code, out)
    assert found and found["kind"] == "login", found
    assert said in found["message"]


def test_claudes_limit_with_an_epoch_reset():
    out = claude_result("Claude AI usage limit reached|1767225600", True)
    assert until_of("claude", 1, out) == 1767225600
    assert "usage limit reached" in preset("claude").classify(1, out)["message"]


@pytest.mark.parametrize("text", ["5-hour limit reached ∙ resets 3pm",
                                  "You've hit your session limit · resets 3pm (UTC)",
                                  "You've hit your weekly limit · resets 3pm (Europe/London)"])
def test_claudes_limit_with_a_clock_reset_is_the_next_such_time(text, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        until = until_of("claude", 1, claude_result(text, True))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert time.time() < until <= time.time() + 86400
    assert datetime.fromtimestamp(until, UTC).minute == 0


@pytest.mark.parametrize(("name", "exit_code", "out"), [
    ("claude", 1, claude_result("API Error: 429 {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
                                "\"message\":\"Number of request tokens has exceeded your per-minute rate limit\"}}",
                                True)),
    ("claude", 1, claude_result("Request failed", True, api_error_status=429)),
    ("codex", 1, jsonl({"type": "turn.started"}, {"type": "error", "message": "exceeded retry limit, last status: "
                                                                              "429 Too Many Requests"})),
    ("codex", 1, jsonl({"type": "turn.failed", "error": {"message": "You've hit your usage limit. Upgrade to Pro "
                        "(https://chatgpt.com/explore/pro), visit https://chatgpt.com/codex/settings/usage to "
                        "purchase more credits or try again later."}})),
    ("gemini", 1, '{\n  "error": {\n    "type": "Error",\n    "message": "[{\\"error\\":{\\"code\\":429,\\"message\\":'
                  '\\"Resource has been exhausted (e.g. check quota).\\",\\"status\\":\\"RESOURCE_EXHAUSTED\\"}}]"\n'
                  '  }\n}\n'),
    ("aider", 0, "litellm.RateLimitError: AnthropicException - {\"type\":\"error\",\"error\":{\"type\":"
                 "\"rate_limit_error\"}}\nThe API provider has rate limited you. Try again later or check your quotas."
                 "\nRetrying in 0.2 seconds...\n"),
])
def test_rate_limited_without_a_reset_time(name, exit_code, out):
    assert until_of(name, exit_code, out) is None


def test_codex_limit_with_a_relative_reset():
    out = jsonl({"type": "thread.started", "thread_id": "t"}, {"type": "turn.started"},
                {"type": "error", "message": "You've hit your usage limit. Upgrade to Plus to continue using "
                                             "Codex (https://openai.com/chatgpt/pricing), or try again in 2 hours "
                                             "5 minutes."},
                {"type": "turn.failed", "error": {"message": "You've hit your usage limit."}})
    before = time.time()
    until = until_of("codex", 1, out)
    assert before + 7500 <= until <= time.time() + 7500


def test_gemini_quota_with_a_retry_delay():
    out = ("Attempt 1 failed with status 429. Retrying with backoff... ApiError: {\"error\":{\"code\":429,"
           "\"message\":\"You exceeded your current quota, please check your plan and billing details. Please retry "
           "in 23.5s.\",\"status\":\"RESOURCE_EXHAUSTED\"}}\n")
    before = time.time()
    assert before + 23.5 <= until_of("gemini", 1, out) <= time.time() + 23.5


@pytest.mark.parametrize(("name", "exit_code", "out"), [
    ("claude", 1, claude_result("I could not make the tests pass: the rate limiter returns 429 when it "
                                "should not, and OPENAI_API_KEY handling is missing.", False)),
    ("claude", 0, claude_result("Claude AI usage limit reached|1767225600", True)),  # exit 0 passes, as the exit says
    ("claude", 143, ""),
    ("codex", 1, jsonl({"type": "item.completed", "item": {"type": "command_execution", "exit_code": 1,
                        "aggregated_output": "FAILED test_rate_limit - assert 429 Too Many Requests == 200"}},
                       {"type": "turn.failed", "error": {"message": "stream disconnected before completion"}})),
    ("codex", None, CODEX_NO_NETWORK),
    ("gemini", 1, "Error executing tool run_shell_command: Command exited with code 2\n"),
    ("gemini", 53, '{"error": {"type": "FatalTurnLimitedError", "message": "Reached max session turns", "code": 53}}'),
    ("aider", 0, "Applied edit to app.py\nCommit 1a2b3c4 feat: add a rate limit of 10 per minute\nTokens: 2.1k sent, "
                 "300 received. Cost: $0.01 message, $0.01 session.\n"),
    ("aider", 1, "Traceback (most recent call last):\nKeyboardInterrupt\n"),
])
def test_an_ordinary_end_is_left_to_the_exit_code(name, exit_code, out):
    assert preset(name).classify(exit_code, out) is None


def test_shell_reads_nothing():
    assert preset("shell").classify(1, CLAUDE_NOT_LOGGED_IN) is None
    assert preset("shell").usage(CLAUDE_NOT_LOGGED_IN) is None


# --- reset times -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("Claude AI usage limit reached|1767225600", 1767225600),
    ('{"resetsAt": 1767225600}', 1767225600),
    ("limit resets at 2026-03-10T18:30:00Z", utc(2026, 3, 10, 18, 30)),
    ("quota resets at 2026-03-11 02:00:00+02:00", utc(2026, 3, 11, 0, 0)),
    ("try again in 20 minutes", NOW + 1200),
    ("try again in 4 days 3 hours.", NOW + 4 * 86400 + 3 * 3600),
    ("try again in 1h 30m", NOW + 5400),
    ("Please retry in 23.5s.", NOW + 23.5),
    ('"retryDelay": "40s"', NOW + 40),
    ("resets 3pm (UTC)", utc(2026, 3, 10, 15)),
    ("resets 11am (UTC)", utc(2026, 3, 11, 11)),  # past today: tomorrow
    ("resets 3:30pm (America/New_York)", utc(2026, 3, 10, 19, 30)),  # EDT since 8 March
    ("Access resets at 1:05 PM UTC.", utc(2026, 3, 10, 13, 5)),
    ("resets Mar 12, 3pm (UTC)", utc(2026, 3, 12, 15)),
    ("resets Jan 2, 3pm (UTC)", utc(2027, 1, 2, 15)),  # a date gone this year is next year's
    ("resets Jan 2, 2028, 9:15am (UTC)", utc(2028, 1, 2, 9, 15)),
    ("usage limit reached", None),
    ("rate limit exceeded; retrying 3 times", None),
    ("limit reached at 12 requests", None),
])
def test_reset_at(text, expected):
    assert reset_at(text, NOW) == expected


def test_reset_at_reads_a_time_without_a_zone_as_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert reset_at("try again at 3:51 PM.", NOW) == utc(2026, 3, 11, 6, 51)  # 21:00 in Tokyo now: tomorrow
        assert reset_at("try again at Sep 29th, 2026 12:55 AM.", NOW) == utc(2026, 9, 28, 15, 55)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert os.environ.get("TZ") is None


# --- usage -------------------------------------------------------------------------------------------------------

def test_claude_usage_counts_cache_tokens_as_input():
    out = "some stderr\n" + claude_result("done", False, total_cost_usd=0.0123, usage={
        "input_tokens": 3, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 50})
    assert preset("claude").usage(out) == {"input_tokens": 2103, "output_tokens": 50, "cost_usd": 0.0123}
    assert preset("claude").usage("Not logged in · Please run /login\n") is None


def test_codex_usage_sums_its_turns():
    out = jsonl({"type": "thread.started", "thread_id": "t"},
                {"type": "item.completed", "item": {"type": "agent_message", "text": "{\"usage\": 1}"}},
                {"type": "turn.completed", "usage": {"input_tokens": 1000, "cached_input_tokens": 800,
                                                     "output_tokens": 40}},
                {"type": "turn.completed", "usage": {"input_tokens": 2500, "cached_input_tokens": 2000,
                                                     "output_tokens": 60}})
    assert preset("codex").usage(out) == {"input_tokens": 3500, "output_tokens": 100}
    assert preset("codex").usage(CODEX_NO_NETWORK) is None


def test_gemini_usage_sums_its_models_pretty_printed_result():
    stats = {"models": {"gemini-2.5-pro": {"tokens": {"input": 900, "prompt": 1000, "candidates": 200, "total": 1300,
                                                      "cached": 100, "thoughts": 100, "tool": 0}},
                        "gemini-2.5-flash": {"tokens": {"prompt": 50, "candidates": 5, "thoughts": 0}}},
             "tools": {"totalCalls": 2}}
    out = "YOLO mode is enabled.\n" + json.dumps({"session_id": "s", "response": "Done.", "stats": stats}, indent=2)
    assert preset("gemini").usage(out) == {"input_tokens": 1050, "output_tokens": 305}
    assert preset("gemini").usage(GEMINI_NO_AUTH) is None


def test_aider_usage_sums_messages_and_takes_the_session_cost():
    out = ("Tokens: 1.2k sent, 300 received. Cost: $0.01 message, $0.02 session.\nApplied edit to app.py\n"
           "Tokens: 12k sent, 1.1k cache write, 8.2k cache hit, 1.5k received.\nCost: $0.05 message, $0.07 session.\n")
    assert preset("aider").usage(out) == {"input_tokens": 1200 + 12000 + 8200, "output_tokens": 1800, "cost_usd": 0.07}
    assert preset("aider").usage("Tokens: 812 sent, 95 received.\n") == {"input_tokens": 812, "output_tokens": 95}
    assert preset("aider").usage(AIDER_NO_KEY) is None


# --- the plugin example in docs/presets.md -----------------------------------------------------------------------

def test_the_docs_preset_plugin_example_registers_and_reads(tmp_path, monkeypatch):
    docs = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    source = re.search(r"```python\n(# my_agent_preset\.py\n.*?)```", docs, re.S).group(1)
    (tmp_path / "my_agent_preset.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AGENTKIT_PLUGINS", "my_agent_preset")
    plugins.reset()
    mine = preset("my-agent")
    assert mine.binary == "my-agent" and mine.login_hint == "run `my-agent auth`"
    assert mine.command("coding", VALUES) == ["my-agent", "run", "--task-file", PROMPT, "--attempt", "1"]
    assert mine.command("init", VALUES) == ["my-agent", "plan", "--spec", PROMPT]
    assert mine.classify(3, "error: throttled for 90s")["until"] >= time.time() + 89
    assert mine.classify(1, "not authenticated")["kind"] == "login"
    assert mine.usage("tokens in=10 out=2") == {"input_tokens": 10, "output_tokens": 2}
    assert preset("claude").binary == "claude", "the built-ins are still there"
