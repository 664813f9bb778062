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


@hookspec
def config_keys() -> dict | None:
    """Declare a plugin's config keys with their defaults: ``{"executors.ray.address": "", …}``. They are read,
    type-checked and overridden like agentkit's own (files, ``AGENTKIT_<KEY>`` env vars) and listed by `config
    show`; the type of a default is the type of its value (a string, an int, a float, a list of strings). Name
    keys under your plugin's own prefix (``executors.<name>.``); one of agentkit's own keys cannot be redefined,
    and between plugins the first answer wins. Called only when a key that is not agentkit's own is read or set.
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
    """Offer ways to restart Redis with a new ``databases`` value. Called by `scale --provision` when a
    restart is needed, under ``.agents/locks/provision.lock``.

    Call ``register(name, restart)`` where ``restart(repo, databases: int) -> None`` restarts the Redis the
    repo uses so that ``CONFIG GET databases`` answers at least ``databases`` afterwards, keeping existing keys;
    raise ``AgentkitError`` with a hint on failure (exit 1). Config ``redis.provisioner`` picks one by name
    (built-ins: ``managed``, ``command``). The first registration of a name wins, and plugins are called before
    the built-ins, so registering ``managed`` or ``command`` replaces the built-in one (``trylast=True`` would
    make the built-in win instead).
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
    """Extra ``NAME=value`` pairs for a worktree's env file. Called whenever the env file is (re)written
    (``new``, ``up``). ``worktree`` has ``slug``, ``path``, ``branch``, ``redis_db``, ``redis_url``,
    ``ports``, ``env_file``, ``status``.

    Values pass through ``str()``. All answers are merged over agentkit's own keys (so a plugin may override
    ``REDIS_URL``); on a clash between plugins the first answer wins, and pluggy calls the plugin registered
    last first (``tryfirst``/``trylast`` change that).
    """


@hookspec
def worktree_up(worktree: dict, config) -> None:
    """Bring up a worktree's stack (a dev server, containers). Called at the end of `worktree up`, after the
    env file is written; `new` does not call it. Same ``worktree`` dict as ``worktree_env``; an exception
    fails the command."""


@hookspec
def worktree_removed(worktree: dict, config) -> None:
    """Tear down what ``worktree_up`` started. Called by `worktree remove` (and `cleanup`, for each worktree it
    removes) after its checks pass and before git removes the folder and the Redis DB is flushed; not with
    ``--dry-run``. ``worktree["status"]`` is the stored state (``active``, or ``creating`` for a half-made
    one), not the `list` status."""


@hookspec
def worktree_users(repo, worktree: dict, released_by: str | None) -> list | None:
    """Who is using a worktree now, as short strings (``"job(s) [12, 14]"``). All answers are joined; while
    any is given, `worktree remove` and `cleanup` refuse the worktree (exit 7) unless ``--force``.

    Called by `worktree remove` before anything is changed. ``worktree`` is its stored row (``slug``,
    ``path``, ``branch``, ``redis_db``, ``status``). ``released_by`` names who is removing it on its own
    behalf (``"job 12"`` when a job's ``auto`` worktree is released as the job ends), so that user is left
    out. The built-in names the queued and running jobs whose worktree it is.
    """


@hookspec
def snapshot_sections(repo) -> dict | None:
    """Add top-level sections to `agentkit snapshot`. Return ``{"section_name": data}``; all are merged.

    A name is lowercase letters, digits and ``_``, starting with a letter (prefix it with your plugin's name);
    a core section's name, one another plugin already gave, or a bad name is left out and named in the
    snapshot's ``warnings`` (docs/snapshot.md). Called on every snapshot, which must stay fast: read state, do
    not start services.
    """


@hookspec(firstresult=True)
def task_scores(tasks: list) -> list | None:
    """Score ready tasks; higher goes first. The first non-None answer wins.

    Scores are kept in the state DB: this is called, inside the transaction of a `claim` or `task ready`,
    with the ready tasks whose score is not known yet: those that became ready, or whose row or
    ``dependents`` changed since they were scored, and every ready task when the set of plugins
    implementing this hook changes. So a score must be a function of the task dict alone. Each task has
    ``id``, ``name``, ``priority``, ``skip_count``, ``attempts``, ``status``, ``category``, ``meta``, and
    ``dependents``: the number of distinct tasks that depend on it directly or transitively. Return a list of
    the same length, in the same order, of ``{"score": int, "parts": {name: int}}``; anything else fails the
    command with exit 1 naming the plugin problem. Ties are broken by priority, then id. The built-in score
    is ``(1000 - priority) + 100 * dependents - 10 * skip_count`` with parts ``priority``, ``dependents``,
    ``skips``.
    """


@hookspec
def register_executors(register):
    """Offer ways to run jobs. Called when jobs are dispatched, polled, killed or reaped.

    Call ``register(name, executor)``; the first registration of a name wins, and plugins are called before
    the built-ins, so a plugin can replace ``local``. Config ``jobs.executor`` (or ``spawn --executor``)
    picks one by name; an unknown name exits 2. The concurrency limit and the FIFO queue are agentkit's: an
    executor is handed a job only once it holds a slot (state ``running``). An executor is an object with
    three methods, all called on the machine that holds the state DB, so a job may run anywhere::

        submit(repo, job: dict) -> dict | None
        poll(repo, job: dict) -> dict
        kill(repo, job: dict, grace: float) -> int | None

    ``job`` is the job's row as a dict (``job_id``, ``command``, ``cwd``, ``timeout_s``, ``grace_s``,
    ``handle``, …).

    - ``submit`` starts the job: ``job["command"]`` (a list) in ``job["cwd"]``, with the environment
      ``agentkit.jobs.job_env(repo, job)``; for ``--worktree auto`` first
      ``job = agentkit.jobs.prepare_worktree(repo, job)``. It returns a JSON-able handle (a submission id, an
      address) that later calls get back as ``job["handle"]``. It raises ``AgentkitError`` naming the address
      when the backend cannot be reached: the job is recorded as failed, `spawn` exits 1, nothing stays
      queued.
    - ``poll`` says where the job is, as ``{"state": …}``: ``"running"``, optionally with ``"started_at"``
      (epoch seconds its command started, which starts the timeout clock); an end state (``"succeeded"``,
      ``"failed"``, ``"killed"``, ``"timed_out"``) with ``"exit_code"``, ``"signal"``, ``"reason"`` (each may
      be None) and ``"log"`` (text to append to the job's log); or ``"lost"`` with a ``"reason"`` when what
      ran the job is gone without an outcome (agentkit then calls ``kill`` to stop what may be left, and
      records the job as failed). Any report may carry ``"log"``: text to append to the job's log (an executor
      that tails a remote log returns what is new since the log file's size, so `jobs logs -f` follows it).
      agentkit records what ``poll`` reports, from `jobs wait`, `jobs kill` and
      `reap`; the executor never writes the state DB. A runner next to the DB may record the end itself
      with ``agentkit.jobs.finish`` (the built-in local supervisor does) and is reported ``running`` until
      it is gone.
    - ``kill`` stops the job's whole process tree: TERM, ``grace`` seconds, then KILL. It returns how many
      processes it stopped, if known. A job that ends after agentkit asked for its kill is recorded as
      ``killed`` (``timed_out`` for a timeout).

    An executor may also have ``warm(repo, count) -> int``: get ``count`` runners ready ahead of a burst of jobs
    and return how many it started (`agentkit run` calls it with ``-c`` as it starts; the local executor starts
    idle supervisors, which wait ``jobs.linger`` to be handed a job).

    An executor may also have ``health(repo) -> dict``: what its backend has free (a cluster's nodes and CPUs),
    shown by `health` under ``executors`` for the configured executor and those of running jobs; it never raises.

    Timeouts count execution only. An executor with ``enforces_timeout = True`` ends jobs at their deadline
    itself (the local one does); for any other, a poll that finds a job past ``timeout_s`` kills it and
    records ``timed_out``.
    """


@hookspec
def register_presets(register):
    """Offer agent presets for `agentkit run --agent NAME`. Called when a run starts (and by `agentkit plugins`).

    Call ``register(name, preset)``; the first registration of a name wins, and plugins are called before the
    built-ins (``claude``, ``codex``, ``aider``, ``gemini``, ``shell``), so a plugin can replace one. A preset is
    an object with::

        binary: str | None            # the program that must be on PATH before anything is claimed
        login_hint: str               # the step that logs the agent in ("run `claude` once and /login")
        command(kind, values) -> list[str]
        classify(exit_code, log_tail) -> dict | None
        usage(log_text) -> dict | None

    - ``command`` builds the argv for ``kind`` ``"coding"``, ``"testing"`` or ``"init"``. ``values`` has
      ``task_id``, ``task_name``, ``prompt_file``, ``worktree``, ``claim_id``, ``model`` (``""`` when none was
      given), ``attempt``; ``agentkit.presets.render(template, values)`` splits a template shell-style and fills
      its ``{placeholders}``. The argv is run as is, never through a shell unless it says ``sh -c``.
    - ``classify`` reads an agent's exit code and the last 8 KiB of its log. ``None``: the exit code decides
      (0 passes). ``{"kind": "rate_limited", "until": epoch | None, "message": str}``: the task is paused, not
      failed (no attempt burned), and no agent of this preset is started before ``until`` (default: 5 minutes
      on). ``{"kind": "login", "message": str}``: the agent is not logged in; the run stops claiming at once,
      burning no attempt, and names ``login_hint``.
    - ``usage`` reads the whole log and may return ``{"input_tokens": int, "output_tokens": int,
      "cost_usd": float}`` (any subset); it is recorded per agent and summed per task and per run.
    """


@hookspec
def notify(event: dict, config) -> None:
    """A state change a person should act on. Called by `agentkit run` for each, in the run's process.

    ``event`` has ``kind`` (``task_dead``, ``run_stalled``, ``rate_limited``, ``login_required``,
    ``run_finished``), ``ts``, ``run_id``, a one-line ``message``, and the kind's data (``task_id``,
    ``until``, ``exit_code``, ``counts``…); ``config`` is the run's config. An exception is logged in the
    run's debug log and otherwise ignored. The built-in runs config ``run.notify_cmd`` (split shell-style)
    with the event as JSON on stdin.
    """
