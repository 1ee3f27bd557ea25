"""Start Streamlit with its network probes switched off.

When a websocket arrives from an origin other than localhost (a page behind a reverse
proxy, or opened by host name), Streamlit decides whether to accept it by asking for the
machine's internal IP (a UDP connect to 8.8.8.8) and its external IP (an HTTP request to
checkip.amazonaws.com) — before it looks at `server.corsAllowedOrigins`. An air-gapped
product must make neither call, so `taimatsu ui` starts Streamlit through this module,
which makes both lookups answer "unknown" first. Streamlit then falls through to the
configured allow-list, exactly as when a probe fails.
"""

from __future__ import annotations

import sys

from streamlit import net_util


def disable_probes() -> None:
    net_util.get_internal_ip = lambda: None
    net_util.get_external_ip = lambda: None


def main() -> None:
    disable_probes()
    from streamlit.web.cli import main as streamlit_main

    sys.argv[0] = "streamlit"
    sys.exit(streamlit_main())


if __name__ == "__main__":
    main()
