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


class Guard:
    """ASGI middleware: every request (page, API, stream, action) shows the token when one is set, as `?token=`
    (answered with the HttpOnly cookie), the `agentkit_token` cookie or `Authorization: Bearer`; a POST whose
    Origin header names another host is refused (403), so another site's page cannot press the buttons."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if self.token is not None:
            auth = headers.get("authorization", "")
            bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            given = from_query or _cookie(headers.get("cookie", ""), COOKIE) or bearer
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _refuse(send, 401, "unauthorized", "this dashboard needs its token",
                                     "open the URL `agentkit dashboard` printed (it carries ?token=), or send "
                                     "`Authorization: Bearer TOKEN`")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            if urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
                return await _refuse(send, 403, "forbidden", f"origin {origin} is not this dashboard",
                                     "actions are taken from the dashboard's own page")
        if self.token is None or from_query is None or not hmac.compare_digest(from_query.encode(),
                                                                                 self.token.encode()):
            return await self.app(scope, receive, send)
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return await self.app(scope, receive, with_cookie)
