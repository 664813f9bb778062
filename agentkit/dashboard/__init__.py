"""The web face: a starlette app serving the HTTP API, the event stream and the page (docs/dashboard.md).

Only `agentkit dashboard` imports this package; starlette and uvicorn come with the `dashboard` extra."""

from agentkit.errors import AgentkitError, ExitCode

EXTRA_HINT = "pip install 'agentkit[dashboard]'"


def require() -> None:
    """Fail with the extra to install when starlette or uvicorn is missing (before anything else is done)."""
    import importlib.util

    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise AgentkitError(f"the dashboard needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
                            " not installed", f"install the dashboard extra: {EXTRA_HINT}", ExitCode.FAILED)


def serve(root, host: str = "127.0.0.1", port: int = 0, token: str | None = None, open_browser: bool = False,
          announce=print) -> None:
    """Bind, announce the URL (one line, before serving), then serve until interrupted."""
    require()
    import socket

    import uvicorn

    from agentkit.dashboard.app import build
    from agentkit.dashboard.auth import needs_token, new_token

    if token is None and needs_token(host):
        token = new_token()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AgentkitError(f"cannot listen on {host}:{port}: {exc.strerror}",
                            "pick another --port (0 = any free one) or --host", ExitCode.USAGE) from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
    announce(f"dashboard: {url}")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    app = build(root, token, host)
    # open event streams never end by themselves: give them a moment, then close them, so SIGTERM stops it
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                           timeout_graceful_shutdown=1))
    app.app.state.stopping = lambda: server.should_exit  # streams end by themselves once shutting down
    server.run(sockets=[sock])
