"""Zero egress, proven (DESIGN.md decision 10).

The whole flow runs as real processes, each under `strace -f` so that every thread and
child is followed: `taimatsu ingest` of a copy of the samples, `taimatsu ask --json` and
`taimatsu status --json` against the Ollama-protocol test server on 127.0.0.1, and
`taimatsu ui` (the Streamlit server) while Debian's Chromium — itself under strace, through
a wrapper script given to Playwright as its executable — loads the page and asks there,
and `taimatsu api` (the HTTP API) while a REST ask, a streamed OpenAI chat, a download
and an MCP `ask` reach it.
Every connect(), sendto(), sendmsg() and sendmmsg() is parsed (a datagram needs no
connect(): sendto() names its destination itself). An IPv4/IPv6 destination outside
loopback (127.0.0.0/8, ::1, ::ffff:127.x) fails the test, and so does DNS to any resolver,
a local stub included: anything to port 53 (127.0.0.53 too), or to the unix sockets of
systemd-resolved and avahi. Other unix and netlink sockets are local. The configured
Ollama is the test server on 127.0.0.1 and the index is embedded (no Qdrant server), so
loopback is all the product may reach here.

The product's environment has no TAIMATSU_*, proxy, Hugging Face or Streamlit variables
from outside: forcing the hub libraries offline, Streamlit's usage statistics off and its
address explicit (without one it probes 8.8.8.8 and checkip.amazonaws.com) is the
product's job, and that is part of what is proven. The browser is not the product: its
own services that call home are pointed at a closed loopback port (quiet_browser_args)
and its IPv6 probe, which sends nothing, is exempt; what the page asks for is untouched.
A summary of every destination is written to the test's artifacts folder.

A send on a connected socket names no destination; its connect() was judged already (a
UDP socket connect()ed to a resolver fails the test there). strace shows the first 32
messages of a sendmmsg() (its default array limit).
"""

from __future__ import annotations

import codecs
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from ingest.pipeline import walk
from tests.conftest import SAMPLES, closed_port_url, need_binary
from tests.ollama_server import FakeOllama
from tests.ui.test_browser import (
    CHROMIUM_ARGS,
    PAGE_MS,
    _free_port,
    _wait_healthy,
    ask,
    wait_for_run,
)

# connect() and the send calls are what the test judges; execve and the clone family
# name the process that made each call (threads and children inherit their parent's name).
SENDS = ("sendto", "sendmsg", "sendmmsg")
TRACED = ",".join(["connect", *SENDS, "execve", "clone", "clone3", "fork", "vfork"])
LOCAL_FAMILIES = {"AF_UNIX", "AF_NETLINK", "AF_UNSPEC"}  # AF_UNSPEC: dissolves a UDP peer
INET_FAMILIES = {"AF_INET", "AF_INET6"}
DNS_PORT = 53
# the local resolvers' own sockets: systemd-resolved (varlink) and avahi (nss-mdns)
RESOLVER_SOCKETS = (
    "/run/systemd/resolve/",
    "/var/run/systemd/resolve/",
    "/run/avahi-daemon/",
    "/var/run/avahi-daemon/",
)
_FOREIGN_ENV = re.compile(
    r"^(TAIMATSU_|HF_|HUGGINGFACE_|TRANSFORMERS_|SENTENCE_TRANSFORMERS|STREAMLIT_)"
    r"|(^|_)PROXY$",
    re.IGNORECASE,
)

# Chromium's IPv6 reachability probe (net/dns/host_resolver_manager.cc) connect()s a UDP
# socket to this address before every host resolution, IP literals included, reads the
# local address the kernel picked and closes it: a UDP connect() sends no packet.
IPV6_PROBE = ("2001:4860:4860::8888", 443)

_CONNECT_RE = re.compile(
    r"^connect\((?P<fd>\d+)(?:<(?P<fdinfo>.*?)>)?,\s*(?P<addr>\{[^}]*\}|[^,]*),"
)
_SEND_RE = re.compile(r"^(?P<call>sendto|sendmsg|sendmmsg)\(\d+(?:<(?P<fdinfo>.*?)>)?,")
_RESUMED_RE = re.compile(r"^<\.\.\.\s+(?P<call>sendto|sendmsg|sendmmsg) resumed>")
# a socket address as strace prints it; a quote inside a sent buffer is escaped (\"),
# so a buffer holding such text cannot pass for an address with an inet_addr("...")
_SOCKADDR_RE = re.compile(r"\{(?:sa|nl)_family=(?P<family>\w+)(?P<body>[^{}]*)\}")
# the peer in a connected socket's -yy decoding: TCP:[10.0.0.2:5000->10.0.0.1:53]
_PEER_RE = re.compile(r"->\[?(?P<host>[0-9A-Fa-f.:]+?)\]?:(?P<port>\d+)\]$")
_RESULT_RE = re.compile(r"\)\s+=\s+(-?\d+)(?:\s+(E\w+))?")
_CLONE_RE = re.compile(r"^(?:<\.\.\.\s+)?(?:clone3?|v?fork)\b.*\)\s+=\s+(\d+)\s*$")
_EXECVE_RE = re.compile(r'^execve\("(?P<path>(?:[^"\\]|\\.)*)",\s*\[(?P<argv>.*?)\]')
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Attempt:
    """One destination of a connect() or send call seen by strace."""

    step: str
    process: str
    tid: int
    family: str
    address: str  # IP address, unix socket path, or "" when there is none
    port: int | None
    protocol: str  # socket type as strace -yy names it: TCP, UDPv6, UNIX-STREAM...
    result: str  # "0", "ECONNREFUSED", "EINPROGRESS", "unfinished"...
    raw: str
    call: str = "connect"

    @property
    def dns(self) -> bool:
        """To a resolver: port 53 at any address (a local stub too), or a resolver's
        unix socket."""
        if self.family in INET_FAMILIES:
            return self.port == DNS_PORT
        return self.family == "AF_UNIX" and self.address.startswith(RESOLVER_SOCKETS)

    @property
    def allowed(self) -> bool:
        if self.dns:
            return False
        if self.family in LOCAL_FAMILIES:
            return True
        return self.family in INET_FAMILIES and is_loopback(self.address)

    @property
    def exempt(self) -> bool:
        """Chromium's IPv6 probe, and only that: the browser, UDP, that one endpoint."""
        return (
            self.step == "chromium"
            and self.call == "connect"
            and self.protocol.startswith("UDP")
            and (self.address, self.port) == IPV6_PROBE
        )

    @property
    def offending(self) -> bool:
        return not (self.allowed or self.exempt)

    def where(self) -> str:
        if self.family in INET_FAMILIES:
            host = f"[{self.address}]" if ":" in self.address else self.address
            return f"{host}:{self.port}"
        return f"{self.family} {self.address}".strip()


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _process_label(name: str, argv: list[str]) -> str:
    """`taimatsu ask ...`, `python3.11 -m streamlit run`, `chromium --type=renderer`..."""
    types = [a for a in argv if a.startswith(("--type=", "--utility-sub-type="))]
    if types:  # a chromium child: zygote, renderer, network service...
        return " ".join([name, *types])
    words = argv[1:4] if name.startswith("python") else argv[1:3]
    return " ".join([name, *(w for w in words if not w.startswith(("/", "--")))])


def _unescape(quoted: str) -> str:
    """A string as strace prints it (C escapes, bytes above 0x7f in octal) as text."""
    raw = codecs.decode(quoted, "unicode_escape").encode("latin-1", "replace")
    return raw.decode("utf-8", "replace")


def _sockaddr(family: str, text: str) -> tuple[str, int | None]:
    """(address, port) of one socket address as strace prints it."""
    address, port = "", None
    if family == "AF_INET":
        ip = re.search(r'inet_addr\("([^"]*)"\)', text)
        address = ip[1] if ip else text
    elif family == "AF_INET6":
        ip = re.search(r'inet_pton\(AF_INET6,\s*"([^"]*)"', text)
        address = ip[1] if ip else text
    elif family == "AF_UNIX":
        path = re.search(r"sun_path=(@?)\"((?:[^\"\\]|\\.)*)\"", text)
        address = path[1] + path[2] if path else "(unnamed)"
    if p := re.search(r"sin6?_port=htons\((\d+)\)", text):
        port = int(p[1])
    return address, port


def _result(rest: str) -> str:
    if "<unfinished" in rest:
        return "unfinished"
    if r := _RESULT_RE.search(rest):
        return r[2] or r[1]
    return "?"


def _send_destinations(rest: str, fdinfo: str) -> list[tuple[str, str, int | None]]:
    """(family, address, port) of each destination a send call names: its socket
    addresses (sendto's, each message's msg_name), or else the peer of a connected
    socket when -yy shows one."""
    found = []
    for m in _SOCKADDR_RE.finditer(rest):
        address, port = _sockaddr(m["family"], m[0])
        found.append((m["family"], address, port))
    if not found and (peer := _PEER_RE.search(fdinfo)):
        family = "AF_INET6" if ":" in peer["host"] else "AF_INET"
        found.append((family, peer["host"], int(peer["port"])))
    return found


def parse_strace(text: str, step: str) -> list[Attempt]:
    """The destinations of the connect() and send calls of a `strace -f -yy` log, each
    named by its process."""
    lines = []
    parent: dict[int, int] = {}
    for line in text.splitlines():
        tid, _, rest = line.partition(" ")
        if not tid.isdigit():
            continue
        lines.append((int(tid), rest.strip()))
        if m := _CLONE_RE.match(rest.strip()):
            parent.setdefault(int(m.group(1)), int(tid))

    labels: dict[int, str] = {}

    def label(tid: int) -> str:
        seen = set()
        while tid not in labels and tid in parent and tid not in seen:
            seen.add(tid)
            tid = parent[tid]
        return labels.get(tid, "?")

    attempts = []
    pending: dict[int, str] = {}  # tid -> the fd decoding of its unfinished send call
    for tid, rest in lines:
        if m := _EXECVE_RE.match(rest):
            if not re.search(r"=\s+-1\s", rest):  # a failed exec leaves the old program
                argv = [_unescape(s) for s in _QUOTED_RE.findall(m["argv"])]
                name = Path(m["path"]).name
                if m["path"] == "/proc/self/exe":  # chromium starting its helpers
                    name = label(tid).split(" ", 1)[0]
                labels[tid] = _process_label(name, argv)
            continue
        send = _SEND_RE.match(rest) or _RESUMED_RE.match(rest)
        if send:
            # a call split by another thread's ends on a "resumed" line, which may hold
            # the rest of its arguments (sendmmsg's messages)
            if send.re is _SEND_RE:
                fdinfo = send["fdinfo"] or "?"
                if "<unfinished" in rest:
                    pending[tid] = fdinfo
            else:
                fdinfo = pending.pop(tid, "?")
            protocol = fdinfo.split(":", 1)[0]
            peer = fdinfo if send.re is _SEND_RE else ""  # counted on the first line
            for family, address, port in _send_destinations(rest, peer):
                attempts.append(
                    Attempt(
                        step,
                        label(tid),
                        tid,
                        family,
                        address,
                        port,
                        protocol,
                        _result(rest),
                        rest,
                        send["call"],
                    )
                )
            continue
        m = _CONNECT_RE.match(rest)
        if not m:
            if rest.startswith("connect("):  # undecodable: judged as foreign, shown raw
                attempts.append(Attempt(step, label(tid), tid, "?", rest, None, "?", "?", rest))
            continue
        addr = m["addr"]
        family = (re.search(r"sa_family=(\w+)", addr) or [None, "?"])[1]
        address, port = _sockaddr(family, addr)
        protocol = (m["fdinfo"] or "?").split(":", 1)[0]
        attempts.append(
            Attempt(step, label(tid), tid, family, address, port, protocol, _result(rest), rest)
        )
    return attempts


def strace_command(strace: str, out: Path) -> list[str]:
    # --seccomp-bpf: the tracees stop only on the traced calls, so torch runs at speed
    return [
        strace,
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-yy",
        "-e",
        f"trace={TRACED}",
        "-e",
        "signal=none",
        "-o",
        str(out),
    ]


def product_env(data_dir: Path, ollama_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _FOREIGN_ENV.search(k)}
    env.update(
        TAIMATSU_DATA_DIR=str(data_dir),
        TAIMATSU_OLLAMA_HOST=ollama_url,
        TAIMATSU_UI_ADDRESS="127.0.0.1",
        TAIMATSU_LOCK_TIMEOUT="60",
    )
    return env


def run_traced(
    strace: str, trace: Path, args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """`taimatsu ARGS` under strace, to its end. In a session of its own, so that a run
    past its time is ended with the command strace traces (killing strace alone would
    detach the command and leave it running)."""
    exe = str(Path(sys.executable).with_name("taimatsu"))
    command = [*strace_command(strace, trace), exe, *args]
    with subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n(killed after 180 s: {shlex.join(args)})"
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _tracee(strace_pid: int) -> int | None:
    """The process strace started (the traced command), if it still runs."""
    try:
        children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@contextmanager
def traced_page_server(
    strace: str,
    trace: Path,
    port: int,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    command: str = "ui",
) -> Iterator[subprocess.Popen]:
    """`taimatsu ui --port P` (or `api`) under strace. At the end the traced server is
    stopped (not strace, which would detach and lose the tail of the log), then strace
    ends itself."""
    exe = str(Path(sys.executable).with_name("taimatsu"))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*strace_command(strace, trace), exe, command, "--port", str(port)],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            server = _tracee(proc.pid)
            if server is not None:
                os.kill(server, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # strace and the server: one session
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def use_the_api(
    server: subprocess.Popen, url: str, log_path: Path, env: dict[str, str], question: str
) -> None:
    """Ask the traced `taimatsu api` as its clients would: REST ask, OpenAI chat streamed,
    the cited document's original, and the MCP `ask` tool, under a token made for it."""
    import asyncio

    import httpx

    from assistant.settings import Settings
    from assistant.tokens import TokenStore

    deadline = time.monotonic() + 120
    while True:  # until it answers, or has died, or the deadline passed
        assert server.poll() is None, log_path.read_text(errors="replace")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.2)
    token = TokenStore(Settings(data_dir=Path(env["TAIMATSU_DATA_DIR"])))
    token = token.create("egress", ["everyone"])[0]
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=180) as http:
        answer = http.post("/api/ask", json={"question": question}).json()
        assert answer["mode"] == "generated", answer
        chat = {"model": "taimatsu", "stream": True}
        chat["messages"] = [{"role": "user", "content": question}]
        streamed = http.post("/v1/chat/completions", json=chat)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        assert http.get(answer["citations"][0]["download"]).status_code == 200
    asyncio.run(_mcp_ask(url, auth, question))


async def _mcp_ask(url: str, headers: dict[str, str], question: str) -> None:
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers=headers)
    async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp:
        result = await mcp.call_tool("ask", {"question": question})
    assert not result.is_error and result.structured_content["mode"] == "generated"


def quiet_browser_args(sink: str) -> list[str]:
    """Chromium's own services, not the page, call home even with CHROMIUM_ARGS (seen with
    Debian's chromium 156): the component updater (update.googleapis.com), the sign-in
    cookie check (accounts.google.com/ListAccounts) and, as soon as a page has a text
    field, autofill's field-type query (content-autofill.googleapis.com). Each is pointed
    at `sink`, a closed loopback port. What the page itself asks for is untouched (no
    host-resolver rules, no proxy), so any request of the page's still shows."""
    return [
        f"--gaia-url={sink}",
        f"--component-updater=url-source={sink}",
        f"--autofill-server-url={sink}/",
    ]


def chromium_under_strace(strace: str, chromium: str, trace: Path, folder: Path) -> Path:
    """A script Playwright can launch as its browser: Debian's chromium under strace."""
    script = folder / "chromium-traced.sh"
    command = shlex.join([*strace_command(strace, trace), chromium])
    script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    script.chmod(0o755)
    return script


def summarize(
    attempts: list[Attempt], steps: dict[str, str], roles: dict[str, str]
) -> tuple[dict, str]:
    """Every destination per step and process, as JSON and as text. `roles` names the
    endpoints the test set up ("127.0.0.1:PORT" -> "Ollama (FakeOllama)", ...)."""
    address, port = IPV6_PROBE
    report: dict = {
        "allowed": "127.0.0.0/8, ::1, ::ffff:127.0.0.0/104; unix and netlink sockets",
        "refused": "port 53 anywhere (loopback stubs too) and resolver unix sockets: DNS",
        "exempt": f"chromium UDP connect() to [{address}]:{port}, its IPv6 probe (no packet)",
        "endpoints": {role: where for where, role in roles.items()},
        "steps": [],
    }
    text = [f"{key}: {report[key]}" for key in ("allowed", "refused", "exempt")]
    text += [f"{role}: {where}" for where, role in roles.items()]
    for step, command in steps.items():
        mine = [a for a in attempts if a.step == step]
        groups: dict[tuple, Counter] = defaultdict(Counter)
        for a in mine:
            verdict = "ok" if a.allowed else "exempt" if a.exempt else "BAD"
            groups[(a.where(), a.call, a.protocol, a.process, verdict)][a.result] += 1
        rows = [
            {
                "destination": where,
                "role": roles.get(where, ""),
                "call": call,
                "protocol": protocol,
                "process": process,
                "verdict": verdict,
                "calls": sum(results.values()),
                "results": dict(results),
            }
            for (where, call, protocol, process, verdict), results in sorted(groups.items())
        ]
        report["steps"].append(
            {"step": step, "command": command, "calls": len(mine), "destinations": rows}
        )
        text.append(f"\n== {step}: {command}  ({len(mine)} connect() and send calls)")
        for row in rows:
            results = ", ".join(f"{r} x{n}" for r, n in row["results"].items())
            role = f" ({row['role']})" if row["role"] else ""
            text.append(
                f"  {row['verdict']:<6} {row['destination'] + role:<50} {row['call']:<9}"
                f" {row['protocol']:<12}"
                f" {row['process']}  [{results}]"
            )
    bad = [a for a in attempts if a.offending]
    report["offending"] = [
        {
            "step": a.step,
            "process": a.process,
            "tid": a.tid,
            "destination": a.where(),
            "call": a.call,
            "dns": a.dns,
            "port": a.port,
            "raw": a.raw,
        }
        for a in bad
    ]
    text.append(f"\noffending attempts: {len(bad)}")
    text.extend(
        f"  {a.step}: {a.process} (tid {a.tid}) {a.call} -> {a.where()}  {a.raw}" for a in bad
    )
    return report, "\n".join(text) + "\n"


def _inet_ports(attempts: list[Attempt], step: str, calls: tuple[str, ...] = ("connect",)):
    return {
        a.port for a in attempts if a.step == step and a.family in INET_FAMILIES and a.call in calls
    }


def test_recorder_flags_a_foreign_destination(tmp_path):
    """The recorder sees a real connect() to a non-loopback address and flags it (a UDP
    connect() to TEST-NET-1 sends no packet), and passes loopback and unix sockets."""
    strace = need_binary("strace")
    trace = tmp_path / "probe.strace"
    code = (
        "import socket\n"
        "for family, addr in ((socket.AF_INET, ('192.0.2.1', 53)),"
        " (socket.AF_INET, ('127.0.0.9', 9)), (socket.AF_INET6, ('::1', 9)),"
        " (socket.AF_INET6, ('::ffff:127.0.0.1', 9)), (socket.AF_INET6, ('2001:db8::1', 443))):\n"
        "    with socket.socket(family, socket.SOCK_DGRAM) as s:\n"
        "        try:\n"
        "            s.connect(addr)\n"
        "        except OSError:\n"
        "            pass\n"
        "with socket.socket(socket.AF_UNIX) as s:\n"
        "    try:\n"
        "        s.connect('/nonexistent/egress-probe')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    subprocess.run([*strace_command(strace, trace), sys.executable, "-c", code], check=True)
    attempts = parse_strace(trace.read_text(), "probe")
    seen = {(a.family, a.address, a.port, a.allowed) for a in attempts}
    assert seen >= {
        ("AF_INET", "192.0.2.1", 53, False),
        ("AF_INET", "127.0.0.9", 9, True),
        ("AF_INET6", "::1", 9, True),
        ("AF_INET6", "::ffff:127.0.0.1", 9, True),
        ("AF_INET6", "2001:db8::1", 443, False),
        ("AF_UNIX", "/nonexistent/egress-probe", None, True),
    }
    assert {a.protocol for a in attempts if a.family == "AF_INET"} == {"UDP"}
    assert all(a.process.startswith("python") for a in attempts)


# Datagrams sent without connect(), each kind of send call, to a loopback resolver stub,
# a documentation address (TEST-NET-1: routed nowhere) and loopback; and resolvers reached
# by connect(). Nothing listens on 127.0.0.53 here; the datagrams go nowhere.
SEND_PROBE = """
import ctypes, socket, struct

def sockaddr_in(host, port):
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + (
        socket.inet_aton(host) + bytes(8))

class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

class Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]

class Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]

query = bytes.fromhex("123401000001000000000000") + b"\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01"
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.sendto(query, ("127.0.0.53", 53))
    s.sendto(b"x", ("127.0.0.1", 9))
    s.sendmsg([query], [], 0, ("192.0.2.1", 53))
    s.sendmsg([b"x"], [], 0, ("192.0.2.1", 9))
    buffer = ctypes.create_string_buffer(query)
    iov = Iovec(ctypes.cast(buffer, ctypes.c_void_p), len(query))
    name = sockaddr_in("127.0.0.53", 53)
    message = Mmsghdr(Msghdr(name, len(name), ctypes.pointer(iov), 1, None, 0, 0), 0)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.sendmmsg(s.fileno(), ctypes.byref(message), 1, 0) == 1
with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
    s.sendto(query, ("::1", 53))
for family, kind, addr in ((socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.53", 53)),
                           (socket.AF_UNIX, socket.SOCK_STREAM,
                            "/run/systemd/resolve/io.systemd.Resolve")):
    with socket.socket(family, kind) as s:
        try:
            s.connect(addr)
        except OSError:
            pass
"""


def test_recorder_flags_sends_and_dns_to_a_local_resolver(tmp_path):
    """The recorder sees datagrams sent with sendto(), sendmsg() and sendmmsg() (no
    connect()) and flags those beyond loopback and every one to port 53, a loopback
    stub resolver included, as it flags connect() to a resolver (TCP to 127.0.0.53:53,
    systemd-resolved's unix socket); a datagram to loopback passes."""
    strace = need_binary("strace")
    trace = tmp_path / "send-probe.strace"
    subprocess.run([*strace_command(strace, trace), sys.executable, "-c", SEND_PROBE], check=True)
    attempts = parse_strace(trace.read_text(), "probe")
    seen = {(a.call, a.address, a.port, a.allowed, a.dns) for a in attempts}
    assert seen == {
        ("sendto", "127.0.0.53", 53, False, True),
        ("sendto", "127.0.0.1", 9, True, False),
        ("sendmsg", "192.0.2.1", 53, False, True),
        ("sendmsg", "192.0.2.1", 9, False, False),
        ("sendmmsg", "127.0.0.53", 53, False, True),
        ("sendto", "::1", 53, False, True),
        ("connect", "127.0.0.53", 53, False, True),
        ("connect", "/run/systemd/resolve/io.systemd.Resolve", None, False, True),
    }
    assert all(a.offending for a in attempts if not a.allowed)  # none is exempt
    report, text = summarize(attempts, {"probe": "python -c SEND_PROBE"}, {})
    assert len(report["offending"]) == 7 and "sendmmsg -> 127.0.0.53:53" in text


def test_whole_flow_connects_only_to_loopback(tmp_path, artifacts):
    strace = need_binary("strace")
    chromium = str(Path(need_binary("chromium")).resolve())
    for old in [*artifacts.glob("*.strace"), *artifacts.glob("*.png")]:
        old.unlink()
    work = tmp_path / "work"  # no taimatsu.toml or .streamlit/ here: only env configures
    work.mkdir()
    shutil.copytree(SAMPLES, work / "samples")
    traces = {
        step: artifacts / f"{step}.strace" for step in ("ingest", "ask", "status", "ui", "api")
    }
    traces["chromium"] = artifacts / "chromium.strace"
    question = "What does error VPN-0x2F mean?"
    steps = {
        "ingest": "taimatsu ingest samples --json",
        "ask": f"taimatsu ask {question!r} --json",
        "status": "taimatsu status --json",
    }

    roles: dict[str, str] = {}
    ollama = FakeOllama().start()
    try:
        ollama_port = int(ollama.url.rsplit(":", 1)[1])
        roles[f"127.0.0.1:{ollama_port}"] = "Ollama (FakeOllama)"
        env = product_env(tmp_path / "data", ollama.url)

        ingest = run_traced(strace, traces["ingest"], ["ingest", "samples", "--json"], env, work)
        assert ingest.returncode == 0, ingest.stderr
        assert json.loads(ingest.stdout)["added"] == len(list(walk(work / "samples")))

        ui_port = _free_port()
        roles[f"127.0.0.1:{ui_port}"] = "the page (taimatsu ui)"
        steps["ui"] = f"taimatsu ui --port {ui_port}"
        steps["chromium"] = "chromium (Playwright, under strace) loads the page and asks"
        url = f"http://127.0.0.1:{ui_port}"
        log_path = artifacts / "streamlit.log"
        api_port = _free_port()
        roles[f"127.0.0.1:{api_port}"] = "the HTTP API (taimatsu api)"
        steps["api"] = f"taimatsu api --port {api_port}: REST ask, OpenAI chat, download, MCP"
        api_log = artifacts / "api.log"
        with (
            traced_page_server(strace, traces["ui"], ui_port, env, work, log_path) as server,
            traced_page_server(
                strace, traces["api"], api_port, env, work, api_log, command="api"
            ) as api_server,
        ):
            # the CLI runs while the page and API servers start (two cores, one wait)
            answered = run_traced(strace, traces["ask"], ["ask", question, "--json"], env, work)
            assert answered.returncode == 0, answered.stderr
            assert json.loads(answered.stdout)["mode"] == "generated", answered.stdout
            status = run_traced(strace, traces["status"], ["status", "--json"], env, work)
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["llm"]["model_present"] is True
            before_api = sum(r["path"] == "/api/chat" for r in ollama.requests)
            use_the_api(api_server, f"http://127.0.0.1:{api_port}", api_log, env, question)
            assert sum(r["path"] == "/api/chat" for r in ollama.requests) >= before_api + 3
            cli_chats = sum(r["path"] == "/api/chat" for r in ollama.requests)

            _wait_healthy(server, url, log_path)
            sink = closed_port_url()
            roles[sink.removeprefix("http://")] = "chromium's own services, redirected"
            browser_exe = chromium_under_strace(strace, chromium, traces["chromium"], tmp_path)
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=str(browser_exe),
                    args=[*CHROMIUM_ARGS, *quiet_browser_args(sink)],
                    env=env,
                )
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.set_default_timeout(PAGE_MS)
                    page.goto(url, wait_until="domcontentloaded")
                    wait_for_run(page)
                    message = ask(page, question)
                    answer = message.get_by_test_id("stChatMessageContent")
                    expect(answer.get_by_test_id("stMarkdown").first).to_contain_text("[1]")
                    page.screenshot(path=artifacts / "answer.png", full_page=True)
                finally:
                    browser.close()  # chromium exits, then its strace
            assert sum(r["path"] == "/api/chat" for r in ollama.requests) > cli_chats
    finally:
        ollama.stop()
        # the summary is written even when a step failed: it is what one reads first
        attempts = [
            attempt
            for step, trace in traces.items()
            if trace.exists()
            for attempt in parse_strace(trace.read_text(), step)
        ]
        report, text = summarize(attempts, steps, roles)
        (artifacts / "egress-summary.json").write_text(json.dumps(report, indent=2) + "\n")
        (artifacts / "egress-summary.txt").write_text(text)

    offending = [(a.step, a.process, a.address, a.port) for a in attempts if a.offending]
    assert not offending, f"outbound connection attempts beyond loopback:\n{text}"
    # the recorder saw the real connections: a check that cannot fail proves nothing
    for step in ("ask", "status", "ui", "api"):
        assert ollama_port in _inet_ports(attempts, step), f"{step} never reached Ollama\n{text}"
        assert ollama_port in _inet_ports(attempts, step, SENDS), f"{step}: no send seen\n{text}"
    assert ui_port in _inet_ports(attempts, "chromium"), f"chromium never reached the page\n{text}"


def test_a_page_opened_from_another_origin_probes_nothing(tmp_path, artifacts):
    """Behind a reverse proxy the browser's Origin is the proxy's host name, and Streamlit
    then asks for the machine's internal and external IPs (8.8.8.8, checkip.amazonaws.com)
    unless `taimatsu ui` switched those probes off (ui/web/serve.py)."""
    from websockets.sync.client import connect

    strace = need_binary("strace")
    trace = artifacts / "cross-origin.strace"
    trace.unlink(missing_ok=True)
    port = _free_port()
    env = product_env(tmp_path / "data", closed_port_url())
    with traced_page_server(strace, trace, port, env, tmp_path, artifacts / "ui.log") as proc:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", artifacts / "ui.log")
        origin = f"http://intranet.example.com:{port}"
        try:
            with connect(
                f"ws://127.0.0.1:{port}/_stcore/stream",
                origin=origin,
                open_timeout=30,
                subprotocols=["streamlit"],
            ) as ws:
                ws.close()
        except Exception as exc:  # noqa: BLE001 - a refused origin is fine; a probe is not
            refused = exc
        else:
            refused = None
    attempts = parse_strace(trace.read_text(errors="replace"), "ui")
    assert not [a.where() for a in attempts if a.offending], f"refused: {refused!r}"
