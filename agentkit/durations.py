"""Durations as people write them on a command line: 90, 90s, 30m, 2h, 7d, 1h30m."""

import re

from agentkit.errors import usage

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_SECONDS = 10 * 365 * 86400
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse(text: str, flag: str = "duration") -> float:
    """Seconds in `text`; a bare number is seconds. Raises a usage error (exit 2) naming the flag."""
    raw = str(text).strip().lower()
    try:
        value = float(raw)
    except ValueError:
        parts = _PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise usage(f"{flag} {text!r} is not a duration", "write it like 90s, 30m, 2h, 7d or 1h30m") from None
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    if not (0 < value <= MAX_SECONDS):  # also refuses nan and inf
        raise usage(f"{flag} {text!r} must be longer than zero and at most 10 years")
    return value
