"""What the HTTP-based remote sources (sites, WebDAV) share: the client (credentials,
CA, timeout, User-Agent), the sentence of a source that is down, and the removal of
items gone from a source — only after a complete listing, never most of the copy at
once without `--allow-mass-delete` (the folder's rule, ingest/listing.py)."""

from __future__ import annotations

from collections.abc import Collection

import httpx

from assistant.errors import IngestRefused, SourceDown
from assistant.settings import Settings
from ingest.listing import MASS_DELETE_MIN, MASS_DELETE_SHARE
from ingest.remote.credentials import credentials_for
from ingest.remote.mirror import Mirror


def http_client(settings: Settings, url: str, credentials_url: str | None = None) -> httpx.Client:
    """A client for the source at `url` (whose credentials are looked up by
    `credentials_url`, the URL as the operator wrote it, when it differs)."""
    creds = credentials_for(settings.source_credentials, credentials_url or url)
    headers = {"User-Agent": settings.crawl_user_agent}
    auth = None
    if creds.token:
        headers["Authorization"] = f"Bearer {creds.token}"
    elif creds.username is not None:
        auth = httpx.BasicAuth(creds.username, creds.password or "")
    ca = settings.source_ca_file
    return httpx.Client(
        headers=headers,
        auth=auth,
        timeout=settings.source_timeout,
        follow_redirects=False,
        verify=str(ca) if ca else True,
        trust_env=False,  # no proxy from the environment: the source is on the network
    )


def reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:200]


def down(what: str, cause: httpx.HTTPError | int) -> SourceDown:
    """The one sentence of a source that cannot be read at all (`cause`: the transport
    error, or the HTTP status)."""
    if isinstance(cause, int):
        if cause in (401, 403):
            why = (
                f"refused access (HTTP {cause}); check the credentials for it in "
                "TAIMATSU_SOURCE_CREDENTIALS"
            )
        elif cause >= 500:
            why = f"failed (HTTP {cause}); wait until the server is back"
        else:
            why = f"answered HTTP {cause}; check the address"
    else:
        why = f"cannot be reached ({reason(cause)}); check the address or the network"
    return SourceDown(f"{what} {why}; nothing was changed")


def drop_missing(
    mirror: Mirror, held: Collection[str], kept: Collection[str], url: str, allow: bool
) -> int:
    """Remove from the copy the items of `held` that a complete listing did not keep;
    IngestRefused (nothing removed) when that is all of them, or most once there are
    MASS_DELETE_MIN. The number removed."""
    doomed = sorted(set(held) - set(kept))
    if not doomed:
        return 0
    total = len(set(held))
    most = total >= MASS_DELETE_MIN and len(doomed) > total * MASS_DELETE_SHARE
    if not allow and (len(doomed) >= total or most):
        raise IngestRefused(
            f"{url} now lists {len(set(kept))} items and {len(doomed)} of the {total} "
            "copied before are gone: the source looks broken or moved, so this run "
            "deleted nothing; check it, or run `taimatsu ingest --allow-mass-delete` to "
            "delete them"
        )
    for relative in doomed:
        mirror.remove(relative)
    return len(doomed)
