"""The built-in agent presets (claude, codex, aider, gemini, shell): each agent's argv, and its exits and usage read."""

import json
import re
import shlex
import time
from datetime import UTC, datetime, timedelta

from agentkit.hookspecs import hookimpl
from agentkit.presets import Template

# What an agent that cannot read a file by itself is told; the prompt file says the rest (the task, how to report).
ASK = {
    "coding": "Read {prompt_file} and do the task it describes in this worktree; commit your work and report the "
              "outcome as it says.",
    "testing": "Read {prompt_file} and verify the tasks it names in this worktree; report each outcome as it says.",
    "init": "Read {prompt_file}, the project's spec, and create its tasks with agentkit as it says.",
}

# Agents print their limits in many words; these are the ones their current releases use (see docs/presets.md).
LIMITED = re.compile("|".join((
    r"rate[ _-]?limit",                                   # rate limit, rate_limit_error, RateLimitError
    r"usage limit", r"limit reached", r"(?:hit|reached) your [\w -]{0,20}limit",
    r"(?:status|code|error)\W{0,3}429\b", r"\b429 Too Many Requests",
    r"RESOURCE_EXHAUSTED", r"quota (?:exceeded|exhausted)", r"exhausted your \w+ quota", r"exceeded your \w* ?quota",
    r"exhausted your capacity",
)), re.I)
LOGIN = re.compile("|".join((
    r"not logged in", r"please run /login", r"invalid api key", r"session (?:has )?expired",
    r"(?:status|code|error)\W{0,3}401\b", r"\b401 Unauthorized", r"authentication_?error",
    r"not able to authenticate you", r"(?:missing|set|provide|no)\b[^\n]{0,80}\b[A-Z]+_API_KEY\b",
    r"Please set an Auth method", r"No LLM model was specified and no API keys were provided",
    r"sign in again", r"codex login",
)), re.I)

MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                      "dec"), 1)}
UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
EPOCH = re.compile(r"(?:\||resets_?at\W{1,3}|reset_at\W{1,3})(\d{10})\b", re.I)
ISO = re.compile(r"(?:resets?|until|again at|after)\W{0,3}(?:at\s+)?"
                 r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)", re.I)
DURATION = r"\d+(?:\.\d+)?\s*(?:days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b"
RELATIVE = re.compile(rf"(?:again|retry|resets?|retryDelay\W{{1,4}})\s*(?:in\s+)?((?:{DURATION}[\s,]*(?:and\s+)?)+)",
                      re.I)
CLOCK = re.compile(r"(?:resets?|again)\s+(?:at\s+)?"
                   r"(?:(?P<mon>[A-Z][a-z]{2})[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:(?P<year>\d{4}),?\s+)?)?"
                   r"(?P<h>\d{1,2})(?::(?P<min>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?\b)?"
                   r"(?:\s*\((?P<tz>[^)\s]+)\)|\s+(?P<utc>UTC|GMT)\b)?", re.I)


def reset_at(text: str, now: float) -> float | None:
    """When the limit a message reports ends, in epoch seconds: an epoch, an ISO time, "in 2 hours", "3pm"."""
    if m := EPOCH.search(text):
        return float(m.group(1))
    if m := ISO.search(text):
        when = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        return (when if when.tzinfo else when.astimezone()).timestamp()
    if m := RELATIVE.search(text):
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z])", m.group(1), re.I)
        return now + sum(float(n) * UNITS[u.lower()] for n, u in parts)
    for m in CLOCK.finditer(text):
        if m.group("ampm") or m.group("min"):
            return _next_clock(m, now)
    return None


def _next_clock(m: re.Match, now: float) -> float:
    """The first moment at or after `now` that the clock time (and date, if given) names, in its zone."""
    zone = _zone(m.group("tz") or m.group("utc"))
    here = datetime.fromtimestamp(now, zone)
    hour = int(m.group("h")) % 12 if m.group("ampm") else int(m.group("h"))
    if (m.group("ampm") or "").lower().startswith("p"):
        hour += 12
    when = here.replace(hour=hour, minute=int(m.group("min") or 0), second=0, microsecond=0)
    if m.group("mon") and m.group("mon").lower() in MONTHS:
        when = when.replace(year=int(m.group("year") or here.year), month=MONTHS[m.group("mon").lower()],
                            day=int(m.group("day")))
        if not m.group("year") and when < here - timedelta(days=1):
            when = when.replace(year=when.year + 1)
    elif when < here:
        when += timedelta(days=1)
    return when.timestamp()


def _zone(name: str | None):
    if not name or name.upper() in ("UTC", "GMT"):
        return UTC if name else None
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return None  # an abbreviation (PST) or a name this machine lacks: read it as local time


def _spans(text: str):
    """Each JSON object that starts a line (a JSON-lines event, a pretty-printed result): (start, end, object)."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^\{", text, re.M):
        try:
            obj, end = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield m.start(), end, obj


def json_objects(text: str) -> list[dict]:
    return [obj for _, _, obj in _spans(text)]


def _errors(obj: dict):
    """The error texts of one JSON event or result (claude's is_error result, codex's error events, gemini's error)."""
    if obj.get("is_error") and isinstance(obj.get("result"), str):
        yield obj["result"]
    if obj.get("api_error_status"):
        yield f"API error status {obj['api_error_status']}"
    error = obj.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    if isinstance(error, str):
        yield error
    if obj.get("type") == "error" and isinstance(obj.get("message"), str):
        yield obj["message"]


def evidence(log_tail: str) -> str:
    """What an agent said about how it ended: its plain output and the error texts of its JSON, not the model's
    words or its tools' output (which may well mention rate limits or API keys)."""
    out, pos = [], 0
    for start, end, obj in _spans(log_tail):
        out += [log_tail[pos:start], *_errors(obj)]
        pos = end
    return "\n".join([*out, log_tail[pos:]])


def _said(text: str, m: re.Match) -> str:
    """The line a match sits in, at most 300 characters."""
    start, end = text.rfind("\n", 0, m.start()) + 1, text.find("\n", m.end())
    return text[start:end if end >= 0 else len(text)].strip()[:300]


class Agent(Template):
    """A preset for one agent CLI: a template per kind (plus --model when one is given), read back by tables."""

    model_flag = "--model"
    limited, login = LIMITED, LOGIN
    login_exits: frozenset = frozenset()
    # An agent that exits 0 when its provider refused it (aider does) is read even on exit 0.
    zero_may_fail = False

    def __init__(self, binary: str, template: str, login_hint: str, install_hint: str):
        super().__init__(**{kind: template.replace("{ask}", shlex.quote(ask)) for kind, ask in ASK.items()},
                         binary=binary)
        self.login_hint, self.install_hint = login_hint, install_hint

    def command(self, kind: str, values: dict) -> list[str]:
        argv = super().command(kind, values)
        return argv + [self.model_flag, values["model"]] if values.get("model") else argv

    def classify(self, exit_code: int | None, log_tail: str) -> dict | None:
        if exit_code == 0 and not self.zero_may_fail:
            return None
        said = evidence(log_tail)
        if m := self.limited.search(said):
            return {"kind": "rate_limited", "until": reset_at(said[m.start():m.start() + 600], time.time()),
                    "message": _said(said, m)}
        if m := self.login.search(said):
            return {"kind": "login", "message": _said(said, m)}
        if exit_code in self.login_exits:
            return {"kind": "login", "message": f"{self.binary} exited {exit_code}: not authenticated"}
        return None


class Claude(Agent):
    def reply(self, log_text):
        results = [o for o in json_objects(log_text) if o.get("type") == "result" and isinstance(o.get("result"), str)]
        return results[-1]["result"] if results else None

    def usage(self, log_text):
        results = [o for o in json_objects(log_text) if o.get("type") == "result"]
        if not results:
            return None
        used, cost = results[-1].get("usage") or {}, results[-1].get("total_cost_usd")
        found = {"input_tokens": sum(int(used.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens",
                                                                      "cache_read_input_tokens")),
                 "output_tokens": int(used.get("output_tokens") or 0)}
        return found | ({"cost_usd": float(cost)} if cost is not None else {})


class Codex(Agent):
    def reply(self, log_text):
        said = [(o.get("item") or {}).get("text") for o in json_objects(log_text) if o.get("type") == "item.completed"
                and (o.get("item") or {}).get("type") == "agent_message"]
        said = [t for t in said if isinstance(t, str)]
        return said[-1] if said else None

    def usage(self, log_text):
        turns = [o.get("usage") or {} for o in json_objects(log_text) if o.get("type") == "turn.completed"]
        if not turns:
            return None
        return {"input_tokens": sum(int(u.get("input_tokens") or 0) for u in turns),
                "output_tokens": sum(int(u.get("output_tokens") or 0) for u in turns)}


class Gemini(Agent):
    login_exits = frozenset({41})  # FatalAuthenticationError

    def reply(self, log_text):
        found = [o["response"] for o in json_objects(log_text) if isinstance(o.get("response"), str)]
        return found[-1] if found else None

    def usage(self, log_text):
        models = [m.get("tokens") or {} for o in json_objects(log_text)
                  for m in ((o.get("stats") or {}).get("models") or {}).values()]
        if not models:
            return None
        return {"input_tokens": sum(int(t.get("prompt") or 0) for t in models),
                "output_tokens": sum(int(t.get("candidates") or 0) + int(t.get("thoughts") or 0) for t in models)}


def _count(word: str) -> int:
    return round(float(word[:-1]) * 1000) if word.lower().endswith("k") else int(word)


class Aider(Agent):
    # aider exits 0 when its provider refused it, and its log is the model's words too: only aider's own messages
    zero_may_fail = True
    limited = re.compile(r"litellm\.\w*RateLimitError|The API provider has rate limited you")
    login = re.compile(r"litellm\.AuthenticationError|The API provider is not able to authenticate you"
                       r"|No LLM model was specified and no API keys were provided")
    TOKENS = re.compile(r"Tokens: ([\d.]+k?) sent(?:, ([\d.]+k?) cache write)?(?:, ([\d.]+k?) cache hit)?, "
                        r"([\d.]+k?) received\.")
    SESSION = re.compile(r"Cost: \$[\d.]+ message, \$([\d.]+) session\.")

    def usage(self, log_text):
        # one Tokens line per message; "sent" already counts cache writes, not cache hits
        lines = self.TOKENS.findall(log_text)
        if not lines:
            return None
        found = {"input_tokens": sum(_count(sent) + _count(hit or "0") for sent, _, hit, _ in lines),
                 "output_tokens": sum(_count(received) for *_, received in lines)}
        costs = self.SESSION.findall(log_text)
        return found | ({"cost_usd": float(costs[-1])} if costs else {})


PRESETS = {
    # -p: headless, the prompt is the argument. bypassPermissions refuses to run as root (containers, CI); edits
    # are accepted and Bash allowed instead, so the agent can test, commit and run `agentkit task pass`.
    "claude": Claude("claude", "claude -p {ask} --output-format json --permission-mode acceptEdits --allowedTools Bash",
                     "run `claude` once and log in with /login (or set ANTHROPIC_API_KEY)",
                     "npm install -g @anthropic-ai/claude-code"),
    # exec: headless, approvals never asked. The agent commits into the repository's git dir and reports to
    # agentkit's state, both outside its worktree, which the workspace-write sandbox forbids.
    "codex": Codex("codex", "codex exec --json --sandbox danger-full-access --cd {worktree} {ask}",
                   "run `codex login` (or `printenv OPENAI_API_KEY | codex login --with-api-key`)",
                   "npm install -g @openai/codex"),
    # aider reads the prompt file itself and commits each change (--auto-commits); it must not touch .gitignore,
    # fetch URLs the prompt mentions, or check for updates.
    "aider": Aider("aider", "aider --message-file {prompt_file} --yes-always --auto-commits --no-gitignore "
                            "--no-pretty --no-stream --no-check-update --no-show-release-notes --no-analytics "
                            "--no-detect-urls",
                   "export your model provider's API key (ANTHROPIC_API_KEY, OPENAI_API_KEY, …) and give --model",
                   "python -m pip install aider-install && aider-install"),
    "gemini": Gemini("gemini", "gemini -p {ask} --approval-mode yolo --skip-trust --output-format json",
                     "run `gemini` once and choose an auth method (or set GEMINI_API_KEY)",
                     "npm install -g @google/gemini-cli"),
}


@hookimpl
def register_presets(register) -> None:
    for name, preset in PRESETS.items():
        register(name, preset)
    register("shell", Template())
