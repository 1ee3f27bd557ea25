"""Remote sources — intranet sites (http, https), WebDAV stores (webdav, webdavs) and
mailboxes (imap, imaps) — each copied into a mirror folder (`mirror`) that the folder
pipeline then ingests. `sources.source_for` turns a URL given to `taimatsu ingest` into
its source; `web` crawls a site, `webdav` lists a store, `mailbox` reads a mailbox;
`common` holds their shared HTTP parts, `credentials` reads
TAIMATSU_SOURCE_CREDENTIALS."""

from ingest.remote.sources import SCHEMES, Remote, is_url, source_for

__all__ = ["SCHEMES", "Remote", "is_url", "source_for"]
