"""Mailboxes: `taimatsu ingest imap://alice@host/INBOX` against a real Dovecot the test
starts on 127.0.0.1 (Debian's dovecot-imapd; passwd-file users, Maildir in a temporary
folder). Messages are put in and taken out over IMAP, as a mail client would."""

from __future__ import annotations

import getpass
import grp
import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from assistant.errors import SourceDown
from assistant.index import open_index
from assistant.retrieval import Searcher
from ingest.acl import ACL_FILE_NAME
from ingest.pipeline import Ingestor
from ingest.remote import source_for
from tests.conftest import need_binary

PASSWORD = "wonderland"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dovecot:
    """Dovecot with its config, state, logs and mail in a temporary folder. As root, the
    mail belongs to `nobody` (Dovecot refuses mail as root); as another user, everything
    runs as that user."""

    def __init__(self) -> None:
        path = f"{os.environ.get('PATH', '')}:/usr/sbin"
        self.binary = shutil.which("dovecot", path=path) or need_binary("dovecot")
        self.home = Path(tempfile.mkdtemp(prefix="taimatsu-dovecot-"))
        self.home.chmod(0o755)  # the mail user must reach its Maildir
        self.port = free_port()
        mail = self.home / "mail"
        mail.mkdir()
        if os.getuid() == 0:
            uid = gid = 65534
            users = ""
            os.chown(mail, uid, gid)
        else:
            uid, gid = os.getuid(), os.getgid()
            me, group = getpass.getuser(), grp.getgrgid(gid).gr_name
            users = (
                f"default_internal_user = {me}\ndefault_login_user = {me}\n"
                f"default_internal_group = {group}\n"
            )
        (self.home / "passwd").write_text(
            f"alice:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{mail}/alice::\n"
        )
        for folder in ("run", "state"):
            (self.home / folder).mkdir()
        (self.home / "dovecot.conf").write_text(
            f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.home}/run
state_dir = {self.home}/state
log_path = {self.home}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{mail}/%u
first_valid_uid = 1
{users}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.home}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.home}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Dovecot:
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.home / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:  # ready once it greets a client
            try:
                imaplib.IMAP4("127.0.0.1", self.port, timeout=2).shutdown()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.home / "dovecot.log"
                    raise RuntimeError(
                        f"dovecot did not start: {log.read_text() if log.exists() else ''}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def client(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login("alice", PASSWORD)
        return conn


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


def message(subject: str, body: str, attachment: tuple[str, str] | None = None) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Hiroshi Sato <sato@example.com>"
    mail["To"] = "alice@example.com"
    mail["Subject"] = subject
    mail["Date"] = "Mon, 07 Dec 2026 09:00:00 +0900"
    mail.set_content(body)
    if attachment:
        name, text = attachment
        mail.add_attachment(text.encode(), maintype="text", subtype="plain", filename=name)
    return bytes(mail)


def append(server: Dovecot, *messages: bytes) -> None:
    conn = server.client()
    for raw in messages:
        assert conn.append("INBOX", None, None, raw)[0] == "OK"
    conn.logout()


@pytest.fixture
def settings(settings, tmp_path):
    return settings.model_copy(update={"parse_timeout": 0})


def ingest(settings, cached, url: str):
    remote = source_for(settings, url)
    return remote, Ingestor(settings, cached).run(remote.mirror.root, remote=remote)


def search(settings, cached, text: str, groups: list[str]):
    return Searcher(settings, cached).search(text, groups)


def test_a_mailbox_is_copied_by_uid_and_read_by_its_owner_only(dovecot, settings, cached, tmp_path):
    secrets = tmp_path / "credentials.toml"
    secrets.write_text(f'["imap://alice@127.0.0.1:{dovecot.port}/"]\npassword = "{PASSWORD}"\n')
    secrets.chmod(0o600)
    settings = settings.model_copy(update={"source_credentials": secrets})
    url = f"imap://alice@127.0.0.1:{dovecot.port}/INBOX"
    append(
        dovecot,
        message("Travel budget", "The travel budget for the third quarter is 40,000 yen."),
        message(
            "Parking permits",
            "The permit list is attached.",
            ("permits.txt", "Parking permit 7 belongs to the night shift supervisor."),
        ),
    )
    remote, first = ingest(settings, cached, url)
    assert first.added == 2 and not first.failed, first
    assert first.url == url

    # the attachment is read by the mail parser; only alice sees her mail
    hits = search(settings, cached, "Who holds parking permit 7?", ["user:alice"])
    assert hits and ";UID=2" in hits[0].url and hits[0].url.startswith(url + ";UIDVALIDITY=")
    assert "night shift" in " ".join(h.text for h in hits)
    for outsider in (["everyone"], ["user:bob", "staff"]):
        assert search(settings, cached, "Who holds parking permit 7?", outsider) == []
    # opened read-only: the messages are still unread in alice's mail client
    conn = dovecot.client()
    conn.select("INBOX")
    flags = conn.fetch("1:*", "(FLAGS)")[1]
    assert flags and not any(b"\\Seen" in line for line in flags), flags
    conn.logout()

    # again: nothing is fetched (same UIDVALIDITY, same UIDs), nothing embedded
    copies = {p.name: p.stat().st_mtime_ns for p in Path(first.root).glob("*.eml")}
    _, second = ingest(settings, cached, url)
    assert (second.unchanged, second.chunks_embedded) == (2, 0)
    assert {p.name: p.stat().st_mtime_ns for p in Path(first.root).glob("*.eml")} == copies

    # a new message is fetched alone; an expunged one leaves the index
    append(dovecot, message("Fire drill", "The fire drill is on the first Tuesday of October."))
    conn = dovecot.client()
    conn.select("INBOX")
    conn.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    conn.expunge()
    conn.logout()
    remote, third = ingest(settings, cached, url)
    assert (remote.last.fetched, remote.last.unchanged) == (1, 1)
    assert (third.added, third.deleted, third.unchanged) == (1, 1, 1)
    assert sorted(open_index(settings).manifest(third.root)) == ["2.eml", "3.eml"]

    # the server renumbers the mailbox (a new UIDVALIDITY): every message is fetched
    # again under its new UID, and the same bytes reuse their vectors
    maildir = dovecot.home / "mail" / "alice"
    for stale in ("dovecot-uidlist", "dovecot.index", "dovecot.index.cache", "dovecot.index.log"):
        (maildir / stale).unlink(missing_ok=True)
    remote, renumbered = ingest(settings, cached, url)
    assert (remote.last.fetched, renumbered.chunks_embedded) == (2, 0), renumbered
    assert sorted(open_index(settings).manifest(third.root)) == ["1.eml", "2.eml"]
    assert renumbered.chunks_reused > 0

    # rules say otherwise: the copy's rules file, once edited, is the operator's
    rules = Path(third.root) / ACL_FILE_NAME
    rules.write_text('default = ["user:alice", "hr"]\n')
    _, fourth = ingest(settings, cached, url)
    assert fourth.acl_updated == 2 and rules.read_text() == 'default = ["user:alice", "hr"]\n'
    assert search(settings, cached, "When is the fire drill?", ["hr"])

    # a wrong password, then a server that is down: the run stops, nothing changes
    manifest = open_index(settings).manifest(third.root)
    secrets.write_text(f'["imap://alice@127.0.0.1:{dovecot.port}/"]\npassword = "expired"\n')
    with pytest.raises(SourceDown, match="refused the login .*nothing was changed"):
        ingest(settings, cached, url)
    dovecot.stop()
    with pytest.raises(SourceDown, match="cannot be reached .*nothing was changed"):
        ingest(settings, cached, url)
    assert open_index(settings).manifest(third.root) == manifest
    assert sorted(p.name for p in Path(third.root).glob("*.eml")) == ["1.eml", "2.eml"]
