"""`taimatsu api`: the application under uvicorn.

uvicorn runs without proxy-header rewriting (`proxy_headers=False`): the address the
trusted-proxy allow-list judges is the connection's own, never one named in
X-Forwarded-For (see ui/web/oidc.py for the same rule on the page)."""

from __future__ import annotations

import uvicorn

from assistant.settings import Settings
from ui.api.app import create_app


def serve(settings: Settings, port: int | None = None) -> None:
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.api_address,
        port=port or settings.api_port,
        proxy_headers=False,
        server_header=False,
        date_header=True,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
