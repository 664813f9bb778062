"""Every pluggy hook agentkit calls, with its exact signature; built-ins implement them like any plugin.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names and argument names match
the specs below; it may implement any subset and take any subset of the arguments.
"""

import pluggy

hookspec = pluggy.HookspecMarker("agentkit")
hookimpl = pluggy.HookimplMarker("agentkit")


@hookspec
def register_commands(app):
    """Add typer commands or sub-apps to the `agentkit` CLI. Called once when the CLI starts.

    ``app`` is the root ``typer.Typer``; call ``app.command()`` or ``app.add_typer()`` on it.
    """


@hookspec(firstresult=True)
def band_target(band: dict) -> int | None:
    """Decide the size of the Redis slot band. The first non-None answer wins.

    Called inside the allocation transaction when a slot is wanted (``band["want"] == 1``) and after a
    slot is released (``want == 0``). ``band`` holds ``floor``, ``step``, ``ceiling`` (allocatable DBs
    under the physical ``databases``), ``current`` (band size now), ``occupied`` (sorted slot indexes in
    use, 0-based) and ``want``. Return the new band size; it is clipped to ``[floor, ceiling]`` (the ceiling
    wins when it is lower) and never below the highest occupied slot + 1. Returning ``current`` when a slot
    is wanted and all are taken makes the allocation fail with exit 3. The built-in elastic band grows by
    ``step`` when full and shrinks by ``step`` while the top step is empty, never below ``floor``.
    """


@hookspec
def register_provisioners(register):
    """Offer ways to restart Redis with a new ``databases`` value. Called when provisioning.

    Call ``register(name, restart)`` where ``restart(repo, databases: int) -> None`` restarts the Redis the
    repo uses so that ``CONFIG GET databases`` answers ``databases`` afterwards, keeping existing keys.
    Config ``redis.provisioner`` picks one by name (built-ins: ``managed``, ``command``).
    """


@hookspec(firstresult=True)
def port_block(slug: str, redis_db: int, config) -> dict | None:
    """Choose the port block for a worktree. The first non-None answer wins.

    Called when a worktree gets its allocation (``new``, ``up``). Return ``{"base": int, "count": int}``.
    The block must be a function of the slot (``redis_db``), which is unique, so blocks never overlap.
    The built-in gives ``ports.base + redis_db * ports.block`` with ``ports.block`` ports.
    """


@hookspec
def worktree_env(worktree: dict, config) -> dict | None:
    """Extra ``NAME=value`` pairs for a worktree's env file. All answers are merged; on a clash the first
    answer wins (pluggy calls the plugin registered last first), and plugins win over agentkit's own keys.

    Called whenever the env file is (re)written. ``worktree`` has ``slug``, ``path``, ``branch``,
    ``redis_db``, ``redis_url``, ``ports``.
    """


@hookspec
def worktree_up(worktree: dict, config) -> None:
    """Bring up a worktree's stack (e.g. start a dev server). Called at the end of `worktree up`."""


@hookspec
def worktree_removed(worktree: dict, config) -> None:
    """Tear down what ``worktree_up`` started. Called by `worktree remove` before git removes the folder."""


@hookspec
def snapshot_sections(repo) -> dict | None:
    """Add top-level sections to `agentkit snapshot`. Return ``{"section_name": data}``; all are merged.

    Called on every snapshot, which must stay fast: read state, do not start services.
    """


@hookspec(firstresult=True)
def task_scores(tasks: list) -> list | None:
    """Score ready tasks; higher goes first. The first non-None answer wins.

    Called by `task ready` and `claim` with every ready task as a dict (``id``, ``name``, ``priority``,
    ``skip_count``, ``attempts``, ``status``, ``category``, ``meta``, and ``dependents``: the number of
    distinct tasks that depend on it directly or transitively). Return a list of the same length, in the
    same order, of ``{"score": int, "parts": {name: int}}``. Ties are broken by priority, then id. The
    built-in score is ``(1000 - priority) + 100 * dependents - 10 * skip_count``.
    """


@hookspec
def register_executors(register):
    """Offer ways to run jobs. Called when a job is dispatched, killed or reaped.

    Call ``register(name, executor)``; the first registration of a name wins, so a plugin can replace a
    built-in. Config ``jobs.executor`` (or ``spawn --executor``) picks one by name; the built-in is ``local``.
    An executor is any object with these three methods (``job`` is the job's row as a dict)::

        submit(repo, job: dict) -> None
            Start the job now: its slot is already taken (state ``running``). Run ``job["command"]`` (a list)
            in ``job["cwd"]``; record the outcome through ``agentkit.jobs.finish(repo, job_id, ...)``. Raise
            ``AgentkitError`` (exit 1, naming the address) if the backend cannot be reached: the job is then
            recorded as failed and nothing stays queued.
        poll(repo, job: dict) -> dict
            ``{"alive": bool}``: whether whatever runs the job still exists (`reap` records jobs whose
            runner died).
        kill(repo, job: dict, grace: float) -> None
            Stop the job's whole process tree: TERM, ``grace`` seconds, then KILL.
    """
