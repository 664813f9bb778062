"""The routes: the page, the JSON API (the CLI's `--json` data under the same names), actions and the stream."""

import functools
import json
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agentkit import claims, events, jobs, presets, tasks
from agentkit.dashboard import views
from agentkit.dashboard.auth import Guard
from agentkit.errors import FAILURES, AgentkitError, ExitCode, usage

STATIC = Path(__file__).parent / "static"
STATUS = {ExitCode.USAGE: 400, ExitCode.NOT_FOUND: 404, ExitCode.CONFLICT: 409, ExitCode.QUEUE_FULL: 429}


class Repos:
    """One Repo per thread: a SQLite connection belongs to the thread that opened it, and starlette runs each
    plain (non-async) endpoint on a worker thread."""

    def __init__(self, root: Path):
        self.root, self._local = root, threading.local()

    def get(self):
        repo = getattr(self._local, "repo", None)
        if repo is None:
            from agentkit.repo import Repo

            repo = self._local.repo = Repo(self.root)
        return repo


def as_json(data, status: int = 200) -> Response:
    return Response(json.dumps(data, default=str), status, media_type="application/json")


def error_response(exc, repo=None) -> Response:
    code = ExitCode(int(exc.code))
    body = {"error": {"code": int(code), "name": code.name.lower(), "message": exc.message, "hint": exc.hint}}
    if code == ExitCode.QUEUE_FULL and repo is not None:
        body["health"] = jobs.health(repo)  # the queue's state, as `agentkit health --json` gives it
    return as_json(body, STATUS.get(code, 500))


def api(endpoint):
    """A plain endpoint `endpoint(repo, request) -> data | Response | Waiting`, run on a worker thread; agentkit's
    errors become the JSON error object with their HTTP status, anything else a 500 naming the failure, never a
    traceback. A `Waiting` answer is waited for here, on the event loop: a request waiting for its job holds no
    worker thread, so many of them never starve the page and the streams."""

    @functools.wraps(endpoint)
    async def run(request: Request) -> Response:
        import anyio

        repos = request.app.state.repos

        def guarded(step):
            try:
                return step()
            except FAILURES as exc:  # a full queue's answer carries the queue's state
                return error_response(exc, repos.get() if int(exc.code) == ExitCode.QUEUE_FULL else None)
            except Exception as exc:  # noqa: BLE001 - the page and scripts get an error object, not a traceback
                return error_response(AgentkitError(f"internal error: {type(exc).__name__}: {exc}",
                                                    "this is a bug in agentkit or one of its plugins: see the "
                                                    "dashboard's stderr, or rerun the same CLI command with "
                                                    "AGENTKIT_DEBUG=1"))

        request.state.raw_body = await request.body() if request.method == "POST" else b""
        out = await anyio.to_thread.run_sync(guarded, lambda: endpoint(repos.get(), request))
        if isinstance(out, Waiting):
            out = await out.wait(repos, request, guarded)
        return out if isinstance(out, Response) else as_json(out)

    return run


class Waiting:
    """An answer that comes once job `job_id` has ended: `then(repo, job_view)` makes it. Its state is read on a
    worker thread every 0.2 s (executors polled every jobs.REFRESH_EVERY_S, as `jobs.wait` does), the wait itself
    on the event loop; a client that goes away stops it (the job runs on)."""

    def __init__(self, job_id: int, then):
        self.job_id, self.then = job_id, then

    async def wait(self, repos, request: Request, guarded):
        import time

        import anyio

        next_refresh = time.monotonic() + jobs.REFRESH_EVERY_S

        def look(refresh: bool):
            repo = repos.get()
            if refresh:
                jobs.refresh(repo, [self.job_id])
            return jobs.get(repo, self.job_id)

        while True:
            refresh = time.monotonic() >= next_refresh
            if refresh:
                next_refresh = time.monotonic() + jobs.REFRESH_EVERY_S
            job = await anyio.to_thread.run_sync(guarded, lambda r=refresh: look(r))
            if isinstance(job, Response) or job["state"] in jobs.FINISHED:
                break
            if await request.is_disconnected():
                return Response(status_code=499)
            await anyio.sleep(0.2)
        if isinstance(job, Response):
            return job
        return await anyio.to_thread.run_sync(guarded, lambda: self.then(repos.get(), jobs.view(job)))


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise usage(f"?{name}={raw!r} is not a whole number", f"for example: ?{name}=100") from None


def path_int(request: Request, name: str) -> int:
    raw = request.path_params[name]
    try:
        return int(raw)
    except ValueError:
        raise usage(f"{raw!r} is not an id", "ids are whole numbers") from None


def body(request: Request) -> dict:
    raw = request.state.raw_body  # read by `api` on the event loop
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise usage(f"the request body is not JSON: {exc}", 'send a JSON object, e.g. {"command": ["true"]}') from None
    if not isinstance(data, dict):
        raise usage("the request body must be a JSON object")
    return data


# ---- reads: the same documents as the CLI's --json ---------------------------------------------------------

@api
def get_snapshot(repo, request):
    from agentkit.snapshot import SCHEMA_VERSION, snapshot

    return snapshot(repo, int_param(request, "schema_version", SCHEMA_VERSION))


@api
def get_health(repo, request):
    return jobs.health(repo)


@api
def get_events(repo, request):
    kind = request.query_params.get("kind") or None
    limit = int_param(request, "limit", 100)
    latest = int_param(request, "latest")
    if latest is not None:  # the newest `latest` events (oldest first): where the page's feed starts
        since = max(0, events.last_id(repo.store) - max(latest, 1)) if kind is None else None
        if since is None:
            raise usage("?latest= cannot go with ?kind=", "use ?since= with ?kind=")
        limit = max(latest, 1)
    else:
        since = int_param(request, "since", 0)
    return {"schema_version": 1, "events": events.recent(repo.store, kind=kind, since_id=since, limit=limit)}


@api
def get_tasks(repo, request):
    return {"schema_version": tasks.SCHEMA_VERSION,
            "tasks": tasks.list_tasks(repo, request.query_params.get("status") or None)}


@api
def get_task(repo, request):
    return claims.show_task(repo, path_int(request, "task_id"))


@api
def get_graph(repo, request):
    return tasks.graph(repo)


@api
def get_jobs(repo, request):
    state = request.query_params.get("state") or None
    return {"schema_version": jobs.SCHEMA_VERSION, "jobs": jobs.list_jobs(repo, state)}


@api
def get_job(repo, request):
    return jobs.view(jobs.get(repo, path_int(request, "job_id")))


@api
def get_log(repo, request):
    job = jobs.get(repo, path_int(request, "job_id"))
    tail = int_param(request, "tail", 65536)
    if tail < 1:
        raise usage(f"?tail={tail}: give a number of bytes, at least 1", "for example: ?tail=4096")
    return PlainTextResponse(jobs.log_tail(Path(job["log_path"]), tail))


@api
def get_agents(repo, request):
    return views.agents(repo)


# ---- actions: each the core function the CLI calls ---------------------------------------------------------

@api
def post_job(repo, request):
    spec = body(request)
    command = spec.get("command")
    if spec.get("preset") is not None:
        if command is not None:
            raise usage('give "command" or "preset", not both')
        command = preset_command(repo, spec)
    if not isinstance(command, list) or not command or not all(isinstance(w, str) and w for w in command):
        raise usage('"command" must be a non-empty list of strings', 'for example: {"command": ["make", "test"]}')
    for key in ("name", "worktree", "cwd", "executor"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise usage(f'"{key}" must be a string')
    timeout = spec.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (str, int, float))):
        raise usage('"timeout" must be a duration such as "30m" or a number of seconds')
    env = spec.get("env") or []
    if not isinstance(env, list) or not all(isinstance(p, str) for p in env):
        raise usage('"env" must be a list of "NAME=value" strings')
    cwd = spec.get("cwd") or (None if spec.get("worktree") else str(repo.root))
    job = jobs.spawn(repo, command, name=spec.get("name"), cwd=cwd, worktree=spec.get("worktree"),
                     timeout=None if timeout is None else str(timeout), env=env, executor=spec.get("executor"))
    if request.query_params.get("wait") not in ("1", "true", "yes"):
        return as_json(job, 201)
    tail = int_param(request, "tail", 4096)
    return Waiting(job["job_id"], lambda repo, done: {**done, "output_tail": jobs.log_tail(Path(done["log_path"]),
                                                                                          tail)})


def preset_command(repo, spec: dict) -> list[str]:
    """`{"preset": NAME, "prompt": TEXT}`: the preset's coding command on a prompt file, as `agentkit run` builds
    one (the file goes into the worktree when one is given, else into a folder of its own under .agents/jobs)."""
    import secrets

    from agentkit import presets, prompts, worktrees

    name, prompt = spec["preset"], spec.get("prompt")
    if not isinstance(name, str) or not name:
        raise usage('"preset" must be a preset\'s name, e.g. "claude"')
    if not isinstance(prompt, str) or not prompt.strip():
        raise usage('a preset needs "prompt": the text the agent gets')
    kind = spec.get("kind") or "coding"
    if kind not in presets.KINDS:
        raise usage(f'"kind" {kind!r} is not one of {", ".join(presets.KINDS)}')
    preset = presets.get(repo, name)
    cfg = repo.config
    if name == cfg["run.agent"] and (cfg["run.agent_cmd"] or cfg["run.testing_cmd"]):  # as `agentkit run` runs it
        preset = presets.Overridden(preset, {"coding": cfg["run.agent_cmd"], "testing": cfg["run.testing_cmd"]})
    presets.check_binary(getattr(preset, "binary", None), name, getattr(preset, "install_hint", None))
    if spec.get("worktree"):
        folder = Path(worktrees.get(repo, spec["worktree"])["path"])
    else:
        folder = jobs.jobs_dir(repo) / f"prompt-{secrets.token_hex(6)}"
        folder.mkdir()
    path = prompts.write(folder, prompt)
    values = {"task_id": "", "task_name": spec.get("name") or "", "prompt_file": str(path), "worktree": str(folder),
              "claim_id": "", "model": spec.get("model") or repo.config["run.model"], "attempt": 1}
    return preset.command(kind, values)


@api
def chat_completions(repo, request):
    """OpenAI's chat completions, answered by an agent: the last user message is the prompt of a preset agent's
    job (`model` names the preset, `PRESET/MODEL` its model too; default run.agent), queued for a slot like any
    job (429 only at the queue-depth valve, never "busy"); what the agent printed is the assistant's message."""

    spec = body(request)
    if spec.get("stream"):
        raise usage("streamed completions are not served", 'send "stream": false (or leave it out)')
    prompt = _last_user_text(spec.get("messages"))
    wanted = spec.get("model") or repo.config["run.agent"]
    if not isinstance(wanted, str):
        raise usage('"model" must be a preset\'s name, e.g. "claude" or "claude/sonnet"')
    preset, _, model = wanted.partition("/")
    command = preset_command(repo, {"preset": preset, "prompt": prompt, "model": model or None, "name": "chat"})
    job = jobs.spawn(repo, command, name=f"chat ({preset})", cwd=str(repo.root))
    return Waiting(job["job_id"], lambda repo, done: _chat_answer(repo, wanted, preset, job, done))


def _chat_answer(repo, wanted: str, preset: str, job: dict, done: dict) -> dict:
    import time

    text = jobs.log_tail(Path(done["log_path"]), 1 << 20).strip()
    found = presets.get(repo, preset)
    reply, spent = _read_agent(found, "reply", text), _read_agent(found, "usage", text) or {}
    text = reply if isinstance(reply, str) else text  # a JSON-speaking agent's answer, else all it printed
    tokens_in, tokens_out = spent.get("input_tokens") or 0, spent.get("output_tokens") or 0
    return {"id": f"chatcmpl-agentkit-{job['job_id']}", "object": "chat.completion", "created": int(time.time()),
            "model": wanted,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop" if done["exit_status"] == 0 else "error"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out},
            "agentkit": {"job_id": job["job_id"], "exit_status": done["exit_status"], "state": done["state"]}}


def _read_agent(preset, what: str, text: str):
    """A preset's reading of an agent's output (`reply`, `usage`); a preset without it, or whose reading fails
    (a plugin's bug), reads nothing rather than failing the answer."""
    read = getattr(preset, what, None)
    try:
        return read(text) if read else None
    except Exception:  # noqa: BLE001
        return None


def _last_user_text(messages) -> str:
    """The text of the last `user` message (a string, or the text parts of a list of content parts)."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] \
        if isinstance(messages, list) else []
    if not users:
        raise usage('"messages" needs a {"role": "user", "content": ...} message',
                    'for example: {"messages": [{"role": "user", "content": "fix the failing test"}]}')
    content = users[-1].get("content")
    if isinstance(content, list):
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        raise usage("the last user message has no text")
    return content


@api
def kill_job(repo, request):
    return jobs.kill(repo, [path_int(request, "job_id")], request.query_params.get("grace") or None)


@api
def release_claim(repo, request):
    spec = body(request)
    return claims.release(repo, request.path_params["claim_id"], spec.get("outcome"), spec.get("reason"))


@api
def reset_task(repo, request):
    return claims.settle(repo, path_int(request, "task_id"), "reset", body(request).get("reason"))


@api
def retry_task(repo, request):
    """A failed task back to work with a fresh attempt count: `task reset`, for failing and dead tasks only
    (a failing task is claimable already; what a retry gives it is its attempts back). The status is checked in
    the reset's own transaction, so a claim taken meanwhile is not ended by it."""
    return claims.settle(repo, path_int(request, "task_id"), "reset",
                         body(request).get("reason") or "retried from the dashboard", only_from=tasks.FAILED_STATUSES)


def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


def build(root, token: str | None, host: str = "127.0.0.1"):
    from agentkit.dashboard.stream import stream

    routes = [
        Route("/", page),
        Route("/api/snapshot", get_snapshot),
        Route("/api/health", get_health),
        Route("/api/events", get_events),
        Route("/api/stream", stream),
        Route("/api/tasks", get_tasks),
        Route("/api/tasks/{task_id}", get_task),
        Route("/api/graph", get_graph),
        Route("/api/agents", get_agents),
        Route("/api/jobs", get_jobs),
        Route("/api/jobs", post_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", get_job),
        Route("/api/jobs/{job_id}/log", get_log),
        Route("/api/jobs/{job_id}/kill", kill_job, methods=["POST"]),
        Route("/api/claims/{claim_id}/release", release_claim, methods=["POST"]),
        Route("/api/tasks/{task_id}/reset", reset_task, methods=["POST"]),
        Route("/api/tasks/{task_id}/retry", retry_task, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes)
    app.state.repos = Repos(Path(root))
    app.state.stopping = lambda: False
    return Guard(app, token, host)
