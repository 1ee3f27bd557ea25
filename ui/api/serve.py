"""`taimatsu api`: the application under uvicorn.

uvicorn runs without proxy-header rewriting (`proxy_headers=False`): the address the
trusted-proxy allow-list judges is the connection's own, never one named in
X-Forwarded-For (see ui/web/oidc.py for the same rule on the page)."""

from __future__ import annotations

import socket

from assistant.errors import TaimatsuError
from assistant.settings import Settings


def _cannot_listen(host: str, port: int) -> TaimatsuError:
    return TaimatsuError(
        f"the API could not listen on {host}:{port} (the port is taken, or the address is "
        "not this machine's); choose another with --port or TAIMATSU_API_ADDRESS / "
        "TAIMATSU_API_PORT"
    )


def _check_listen(host: str, port: int) -> None:
    """Fail in one line, before the models load, when the address cannot be bound."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError:
        raise _cannot_listen(host, port) from None


def serve(settings: Settings, port: int | None = None) -> None:
    """Serve until stopped; TaimatsuError (one line, exit code 1) if it cannot listen."""
    port = port or settings.api_port
    _check_listen(settings.api_address, port)
    import uvicorn  # the application and its models load once the address is known good

    from ui.api.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_address,
        port=port,
        proxy_headers=False,
        server_header=False,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's own exit when it cannot bind after all
        if server.started:
            raise
    if not server.started:
        raise _cannot_listen(settings.api_address, port)
