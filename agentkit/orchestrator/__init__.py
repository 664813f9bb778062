"""`agentkit run`: coding and testing agents on the task graph, a thin loop over claims, worktrees, jobs and
integration. Owns the `runs` and `run_agents` tables; returns data and hands each event to the caller.

options.py: the flags over config `run.*`; loop.py: the run (set-up, loop, stop, summary); starting.py: agents
started; settling.py: ended agents settled."""

from agentkit.orchestrator.loop import Run, run, stuck_lines, usage_of_task
from agentkit.orchestrator.options import INTERRUPTED, KINDS, SCHEMA_VERSION, Options, options

__all__ = ["INTERRUPTED", "KINDS", "SCHEMA_VERSION", "Options", "Run", "options", "run", "stuck_lines",
           "usage_of_task"]
