"""The live feed: Server-Sent Events read from the events table, resumable by event id."""

import json

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse

from agentkit import events
from agentkit.errors import FAILURES, usage

POLL_S = 0.1
KEEPALIVE_S = 15.0
BATCH = 500


def _start(request: Request, store) -> int:
    """Where to resume: after Last-Event-ID (a reconnecting EventSource sends it), else after ?since=, else
    from now."""
    raw = request.headers.get("last-event-id") or request.query_params.get("since")
    if raw is None or raw == "":
        return events.last_id(store)
    try:
        since = int(raw)
    except ValueError:
        raise usage(f"event id {raw!r} is not a whole number", "resume with the id of the last event seen") from None
    events.recent(store, since_id=since, limit=1)  # the same checks as `agentkit events --since`
    return since


def frame(event: dict) -> str:
    """One event as SSE: its id and the row `agentkit events --json` gives (its `kind` inside). No `event:`
    name, so a browser's one `onmessage` gets every kind, a plugin's too."""
    return f"id: {event['id']}\ndata: {json.dumps(event, default=str)}\n\n"


async def stream(request: Request):
    from agentkit.dashboard.app import error_response

    repos = request.app.state.repos
    kind = request.query_params.get("kind") or None
    try:
        since = await anyio.to_thread.run_sync(lambda: _start(request, repos.get().store))
    except FAILURES as exc:
        return error_response(exc)

    def read(after: int) -> list[dict]:
        return events.recent(repos.get().store, kind=kind, since_id=after, limit=BATCH)

    async def frames():
        nonlocal since
        yield f"retry: 1000\n: agentkit events after {since}\n\n"
        quiet = 0.0
        while not request.app.state.stopping():
            batch = await anyio.to_thread.run_sync(read, since)
            for event in batch:
                yield frame(event)
                since = event["id"]
            if len(batch) == BATCH:
                continue
            if batch:
                quiet = 0.0
            elif quiet >= KEEPALIVE_S:  # a comment line keeps proxies and idle timeouts from closing it
                yield ": keepalive\n\n"
                quiet = 0.0
            await anyio.sleep(POLL_S)
            quiet += POLL_S

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})
