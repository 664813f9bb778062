"""`agentkit dashboard`: serve the web dashboard (the `dashboard` extra)."""

import typer

from agentkit.cli.common import handled, open_repo


def dashboard(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; any address that is not "
                                       "loopback requires a token."),
              port: int = typer.Option(0, "--port", help="Port to listen on (0 = a free one)."),
              open_: bool = typer.Option(False, "--open", help="Open the page in a browser."),
              token: str = typer.Option(None, "--token", help="Require this token (default: none on loopback, a "
                                        "new random one on any other address)."),
              ):
    """Serve the web dashboard: live agents, tasks, the band, the event feed and actions. Prints its URL
    (`dashboard: http://HOST:PORT/`) on stdout before serving."""
    from agentkit import dashboard as web

    with handled(False):
        web.require()
        root = open_repo().root
        web.serve(root, host, port, token, open_, announce=lambda line: print(line, flush=True))
