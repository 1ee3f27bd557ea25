"""What `taimatsu ui` adds to the `streamlit run` command line for the sign-in mode.

- `oidc`: Streamlit's `st.login` reads its provider from the `[auth]` section of a secrets
  file. It is written here from the TAIMATSU_OIDC_* settings into a private file (0600) in
  the data folder, and Streamlit is pointed at it (and only at it) with `--secrets.files`.
- `header`: the page must judge the proxy by the address the connection really comes
  from. The web server under Streamlit (uvicorn) would otherwise replace that address
  with the one in `X-Forwarded-For` whenever the connection comes from 127.0.0.1, so a
  proxy on the same machine would look like the user's browser (and be refused), and
  anyone on the machine could name an allow-listed proxy in that header.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import tempfile
from pathlib import Path

from assistant.errors import SettingsError
from assistant.settings import Settings

SECRETS_FILE = "ui-auth.toml"
WELL_KNOWN = "/.well-known/openid-configuration"
CALLBACK = "/oauth2callback"


def streamlit_args(settings: Settings) -> list[str]:
    """Extra `streamlit run` flags for the sign-in mode; exits with one line on bad settings.

    In header mode it also clears FORWARDED_ALLOW_IPS in this process's environment, which
    the page's process inherits (`taimatsu ui` execs Streamlit), so that uvicorn keeps
    the real peer address for the allow-list.
    """
    if settings.auth_mode == "header":
        os.environ["FORWARDED_ALLOW_IPS"] = ""  # uvicorn: believe X-Forwarded-For from no one
        return []
    if settings.auth_mode != "oidc":
        return []
    try:
        path = write_secrets(settings)
    except SettingsError as exc:
        raise SystemExit(f"taimatsu: error: {exc}") from None
    return ["--secrets.files", str(path)]


def server_metadata_url(provider_url: str) -> str:
    url = provider_url.strip().rstrip("/")
    return url if url.endswith(WELL_KNOWN) else url + WELL_KNOWN


def redirect_uri(settings: Settings) -> str:
    """The configured redirect URI, or this page's own; Streamlit fills in `{port}`."""
    if settings.oidc_redirect_uri:
        uri = settings.oidc_redirect_uri.strip()
        if not uri.rstrip("/").endswith(CALLBACK):
            raise SettingsError(
                f"TAIMATSU_OIDC_REDIRECT_URI must end with {CALLBACK} (it is {uri!r}); "
                "set it to the page's address + /oauth2callback"
            )
        return uri.rstrip("/")
    address = settings.ui_address.strip()
    try:
        unspecified = ipaddress.ip_address(address).is_unspecified
    except ValueError:
        unspecified = not address
    if unspecified:
        raise SettingsError(
            f"the page listens on {address or 'every address'}, so the address users open "
            "is unknown; set TAIMATSU_OIDC_REDIRECT_URI to it + /oauth2callback"
        )
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{{port}}{CALLBACK}"


def _toml_string(value: str) -> str:
    """A TOML basic string; other control characters have no business in these settings."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    for char, escape in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        out = out.replace(char, escape)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in out):
        raise SettingsError("an OIDC setting contains a control character")
    return f'"{out}"'


def secrets_toml(settings: Settings) -> str:
    """The `[auth]` section for Streamlit, from the settings."""
    missing = [
        f"TAIMATSU_OIDC_{name.upper()}"
        for name in ("provider_url", "client_id", "client_secret")
        if not (getattr(settings, f"oidc_{name}") or "").strip()
    ]
    if missing:
        raise SettingsError(
            f"OIDC sign-in needs {', '.join(missing)}; set "
            f"{'it' if len(missing) == 1 else 'them'} or choose another TAIMATSU_AUTH_MODE"
        )
    cookie_secret = settings.oidc_cookie_secret or secrets.token_urlsafe(32)
    values = {
        "redirect_uri": redirect_uri(settings),
        "cookie_secret": cookie_secret,
        "client_id": (settings.oidc_client_id or "").strip(),
        "client_secret": settings.oidc_client_secret or "",
        "server_metadata_url": server_metadata_url(settings.oidc_provider_url or ""),
    }
    lines = ["# Written by `taimatsu ui` from TAIMATSU_OIDC_*; rewritten at each start.", "[auth]"]
    lines += [f"{key} = {_toml_string(value)}" for key, value in values.items()]
    lines += ["", "[auth.client_kwargs]", f"scope = {_toml_string(settings.oidc_scopes)}", ""]
    return "\n".join(lines)


def write_secrets(settings: Settings) -> Path:
    """Write the secrets file (owner-only, replaced atomically); return its path."""
    text = secrets_toml(settings)
    folder = Path(settings.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SECRETS_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{SECRETS_FILE}.", dir=folder)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.resolve()
