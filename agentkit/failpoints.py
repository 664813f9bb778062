"""Named pause points that tests use to kill -9 a command mid-way (AGENTKIT_FAILPOINT=name)."""

import os
import time


def reach(name: str) -> None:
    """Park the process here for an hour when AGENTKIT_FAILPOINT names this point; a no-op otherwise."""
    if os.environ.get("AGENTKIT_FAILPOINT") == name:
        time.sleep(3600)
