"""Who may use the dashboard: a token off loopback (or when given), and same-origin actions."""

import hmac
import ipaddress
import json
import secrets
import socket
from urllib.parse import parse_qs, urlsplit

COOKIE = "agentkit_token"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Does binding to `host` listen on loopback only? 127.0.0.0/8 and ::1 do; 0.0.0.0 and :: listen on every
    interface; a name counts as loopback only when every address it resolves to is one."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def needs_token(host: str) -> bool:
    return not is_loopback(host)


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _refuse(send, status: int, name: str, message: str, hint: str) -> None:
    body = json.dumps({"error": {"code": status, "name": name, "message": message, "hint": hint}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _loopback_name(name: str, bound: str) -> bool:
    """A Host header's name that can only mean this machine: a loopback address, `localhost`, or the address
    the dashboard was bound to. Never resolved: a name resolving to 127.0.0.1 is what DNS rebinding uses."""
    name = name.strip("[]").lower()
    if name in ("localhost", bound.strip("[]").lower()):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: every request (page, API, stream, action) shows the token when one is set, as `?token=`
    (answered with the HttpOnly cookie), the `agentkit_token` cookie or `Authorization: Bearer`. Without a token
    (loopback) the Host must name this machine, so a page that rebinds its own name to 127.0.0.1 is refused
    (421). A POST whose Origin names another host is refused (403), and a POST with a body must be JSON, which a
    browser sends cross-site only after a preflight this server never grants: another site's page cannot press
    the buttons."""

    def __init__(self, app, token: str | None, host: str = "127.0.0.1"):
        self.app, self.token, self.host = app, token, host

    def _token_ok(self, headers: dict, from_query: str | None) -> bool:
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        given = [t for t in (from_query, _cookie(headers.get("cookie", ""), COOKIE), bearer) if t]
        return any(hmac.compare_digest(t.encode(), self.token.encode()) for t in given)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # none is served; one added later is guarded the same way
            async def refuse_ws(status, *_):
                await send({"type": "websocket.close", "code": 1008})

            refuse = refuse_ws
        else:
            async def refuse(status, name, message, hint):
                await _refuse(send, status, name, message, hint)
        headers = _headers(scope)
        from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if self.token is not None and not self._token_ok(headers, from_query):
            return await refuse(401, "unauthorized", "this dashboard needs its token",
                                 "open the URL `agentkit dashboard` printed (it carries ?token=), or send "
                                 "`Authorization: Bearer TOKEN`")
        host = headers.get("host", "")
        if self.token is None and not _loopback_name(urlsplit(f"//{host}").hostname or "", self.host):
            return await refuse(421, "misdirected", f"Host {host!r} does not name this machine",
                                 "open the dashboard at the URL it printed (127.0.0.1 or localhost)")
        origin = headers.get("origin")
        if scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS"):
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                return await refuse(403, "forbidden", f"origin {origin} is not this dashboard",
                                     "actions are taken from the dashboard's own page")
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind and kind != "application/json":
                return await refuse(415, "unsupported", f"a POST here is JSON, not {kind}",
                                     "send Content-Type: application/json")
        if self.token is None or from_query is None or not hmac.compare_digest(from_query.encode(),
                                                                                 self.token.encode()):
            return await self.app(scope, receive, send)
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return await self.app(scope, receive, with_cookie)
