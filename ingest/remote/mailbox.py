"""A mailbox, copied into its mirror (ingest/remote/mirror.py) one `.eml` per message,
which the mail parser reads with its attachments.

`imaps://alice@mail.example.com/INBOX` (TLS), or `imap://alice@host/INBOX` (STARTTLS
when the server offers it; plain otherwise, so use imaps:// across a network). The user
is in the URL; the password is in TAIMATSU_SOURCE_CREDENTIALS (the table whose URL
prefixes this one). The mailbox is opened read-only (EXAMINE) and messages are fetched
with BODY.PEEK, so nothing is marked as read. Incremental by UIDVALIDITY and UID: a
message whose UID the copy holds under the same UIDVALIDITY is not fetched again; a new
UIDVALIDITY (the server renumbered the mailbox) fetches all of it again, and the copies
of the same bytes reuse their vectors.

Who may read it: its owner, `user:<name in the URL>` (through TAIMATSU_GROUP_MAP when it
names `user:<name>`), by a rules file Taimatsu writes into the copy
(`.taimatsu-acl.toml`, marked as written by Taimatsu); rules say otherwise when that file
is edited (and the mark removed: Taimatsu then leaves it alone) or TAIMATSU_ACL_FILE is
set.

A mailbox that is down deletes nothing: the server unreachable, the login refused or the
mailbox missing stop the run (SourceDown) before the copy or the index change. Messages
gone from the mailbox leave the copy only after a complete listing, and not most of them
at once without `--allow-mass-delete` (an emptied mailbox is refused).
"""

from __future__ import annotations

import imaplib
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from assistant.errors import IngestError, SourceDown
from assistant.settings import Settings
from ingest.acl import ACL_FILE_NAME
from ingest.permissions import load_group_map
from ingest.remote.common import drop_missing
from ingest.remote.credentials import credentials_for
from ingest.remote.mirror import Mirror, write_atomic

SCHEMES = {"imap": 143, "imaps": 993}
BATCH = 25  # messages per FETCH
RULES_MARK = "# Written by Taimatsu"
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


@dataclass
class Fetch:
    """What a mailbox run did (for the run's summary and the tests)."""

    fetched: int = 0
    unchanged: int = 0
    removed: int = 0
    complete: bool = True
    failed: list[dict[str, str]] = field(default_factory=list)


def _text(data: object) -> str:
    if isinstance(data, list):
        data = b" ".join(d for d in data if isinstance(d, bytes))
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


class Mailbox:
    """One mailbox's copy."""

    def __init__(self, settings: Settings, url: str, *, allow_mass_delete: bool = False) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES or not parts.hostname or not parts.username:
            raise IngestError(
                f"{url} is not a mailbox URL; give one like imaps://user@host/INBOX "
                "(the user in the URL, the password in TAIMATSU_SOURCE_CREDENTIALS)"
            )
        self.settings = settings
        self.scheme = scheme
        self.user = unquote(parts.username)
        self.host = parts.hostname
        self.port = parts.port or SCHEMES[scheme]
        self.name = unquote(parts.path.strip("/")) or "INBOX"
        netloc = f"{quote(self.user, safe='')}@{parts.hostname}"
        netloc += f":{parts.port}" if parts.port else ""
        self.url = f"{scheme}://{netloc}/{quote(self.name, safe='/')}"
        self.allow_mass_delete = allow_mass_delete
        self.mirror = Mirror.for_url(settings.data_dir, self.url)
        self.last: Fetch | None = None  # what the last refresh did

    # -- the connection -------------------------------------------------------------------

    def _down(self, why: str) -> SourceDown:
        return SourceDown(f"{self.url} {why}; nothing was changed")

    def connect(self) -> imaplib.IMAP4:
        creds = credentials_for(self.settings.source_credentials, self.url)
        if not creds.password:
            raise IngestError(
                f"no password for {self.url}: add a table for it to the file "
                "TAIMATSU_SOURCE_CREDENTIALS points at "
                f'(["{self.scheme}://{self.user}@{self.host}/"] password = "...") and rerun'
            )
        ca = self.settings.source_ca_file
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        timeout = self.settings.source_timeout
        try:
            if self.scheme == "imaps":
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=timeout
                )
            else:
                conn = imaplib.IMAP4(self.host, self.port, timeout=timeout)
                if "STARTTLS" in conn.capabilities:
                    conn.starttls(context)
        except (OSError, imaplib.IMAP4.error) as exc:
            why = f"cannot be reached ({exc}); check the address or the network"
            raise self._down(why) from None
        try:
            conn.login(self.user, creds.password)
        except imaplib.IMAP4.error as exc:
            conn.shutdown()
            raise self._down(
                f"refused the login ({_text(exc.args[0] if exc.args else exc)}); check the "
                "password for it in TAIMATSU_SOURCE_CREDENTIALS"
            ) from None
        except OSError as exc:
            why = f"cannot be reached ({exc}); check the address or the network"
            raise self._down(why) from None
        return conn

    # -- the copy ---------------------------------------------------------------------------

    def refresh(self) -> Fetch:
        """Bring the copy in line with the mailbox; SourceDown (nothing changed) when it
        cannot be read at all, IngestRefused when most of the copy would go."""
        conn = self.connect()
        try:
            self.last = self._refresh(conn)
            return self.last
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise self._down(f"broke off ({exc}); the next run will catch up") from None
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    def _refresh(self, conn: imaplib.IMAP4) -> Fetch:
        run = Fetch()
        typ, data = conn.select(f'"{self.name}"', readonly=True)
        if typ != "OK":
            raise self._down(f"has no mailbox {self.name!r} ({_text(data)}); check the URL")
        validity = _text(conn.response("UIDVALIDITY")[1][0]).strip()
        typ, data = conn.uid("SEARCH", None, "ALL")
        if typ != "OK":
            raise self._down(f"cannot be listed ({_text(data)})")
        uids = [int(uid) for uid in _text(data).split()]
        self.mirror.set_origin(self.url)
        self._write_rules()
        known = dict(self.mirror.states())
        current = {rel for rel, state in known.items() if str(state.get("uidvalidity")) == validity}
        new = [uid for uid in uids if f"{uid}.eml" not in current]
        run.unchanged = len(uids) - len(new)
        limit = int(self.settings.max_file_mb * 2**20)
        for start in range(0, len(new), BATCH):
            self._fetch(conn, new[start : start + BATCH], validity, limit, run)
        if run.complete:
            kept = [f"{uid}.eml" for uid in uids]
            run.removed = drop_missing(self.mirror, known, kept, self.url, self.allow_mass_delete)
        return run

    def _fetch(
        self, conn: imaplib.IMAP4, batch: list[int], validity: str, limit: int, run: Fetch
    ) -> None:
        wanted = ",".join(map(str, batch))
        typ, sizes = conn.uid("FETCH", wanted, "(RFC822.SIZE)")
        small = []
        for line in sizes if typ == "OK" else []:
            head = line[0] if isinstance(line, tuple) else line
            uid, size = _UID.search(head or b""), _SIZE.search(head or b"")
            if uid and size and int(size.group(1)) > limit:
                run.failed.append(
                    {
                        "source": self.message_url(validity, int(uid.group(1))),
                        "error": f"over the {self.settings.max_file_mb:g} MB limit "
                        "(TAIMATSU_MAX_FILE_MB)",
                    }
                )
            elif uid:
                small.append(int(uid.group(1)))
        got: set[int] = set()
        if small:
            typ, data = conn.uid("FETCH", ",".join(map(str, small)), "(UID BODY.PEEK[])")
            for part in data if typ == "OK" else []:
                if not isinstance(part, tuple):
                    continue
                uid = _UID.search(part[0])
                if uid is None:
                    continue
                number = int(uid.group(1))
                state = {
                    "url": self.message_url(validity, number),
                    "uid": number,
                    "uidvalidity": validity,
                }
                self.mirror.write(f"{number}.eml", part[1], state)
                got.add(number)
                run.fetched += 1
        for number in set(small) - got:
            run.failed.append(
                {"source": self.message_url(validity, number), "error": "could not be fetched"}
            )
            run.complete = False

    def message_url(self, validity: str, uid: int) -> str:
        """The message's IMAP URL (RFC 5092), which its citations name."""
        return f"{self.url};UIDVALIDITY={validity}/;UID={uid}"

    def owner_groups(self) -> list[str]:
        owner = f"user:{self.user}"
        mapping = load_group_map(self.settings.group_map)
        return mapping.get(owner, [owner]) if mapping is not None else [owner]

    def _write_rules(self) -> None:
        """The copy's rules: its owner reads it — unless someone edited them (the mark
        gone), then they are theirs and stay as they are."""
        path = self.mirror.root / ACL_FILE_NAME
        if path.exists():
            try:
                ours = path.read_text(encoding="utf-8").startswith(RULES_MARK)
            except OSError:
                ours = False
            if not ours:
                return
        groups = ", ".join(f'"{g}"' for g in self.owner_groups()) or '"nobody"'
        text = (
            f"{RULES_MARK} for the mailbox {self.url}: its owner reads it.\n"
            "# To decide otherwise, edit this file and remove the line above;\n"
            "# Taimatsu then leaves it as it is.\n"
            f"default = [{groups}]\n"
        )
        write_atomic(path, text.encode("utf-8"))
