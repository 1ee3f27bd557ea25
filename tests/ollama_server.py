"""A test double of the Ollama HTTP API, served on 127.0.0.1.

This is a fake Ollama server for tests. It exists because the real Ollama
server cannot run on the test machines. The real `ollama` Python client and
the llama-index `Ollama` wrapper talk to it over HTTP, exactly as they would
talk to Ollama. It does not run any model: every answer comes from a
`reply` callable, by default a fixed "echo" rule that quotes the passages
in the prompt (see `echo_reply`); `styled_reply(style)` writes that echo the
way real models do (other citation markers, none, preambles, <think> blocks,
a reply cut at its limit: `REPLY_STYLES`). tests/openai_server.py reuses all
of it for the OpenAI protocol.

It is standard library only (`http.server.ThreadingHTTPServer`, served from a
daemon thread) and binds an ephemeral port on 127.0.0.1, never another address.

Wire format, as the real server sends it:

* `GET /api/version`, `GET /api/tags`, `POST /api/show`: one JSON object.
* `POST /api/chat`, `POST /api/generate`: NDJSON over chunked transfer
  encoding, one object per piece of text with `"done": false`, then a final
  object with `"done": true`, `"done_reason"` and the token counts and
  durations. With `"stream": false`, one JSON object.
* Errors: a JSON body `{"error": "..."}` with the status code, which the
  client turns into `ollama.ResponseError` with that `status_code`. An unknown
  model is 404 `model "x" not found, try pulling it first` on chat/generate
  (recent Ollama releases word it `model 'x' not found`; match on the 404, not
  the text) and 404 `model 'x' not found` on show. A `reply` callable that
  raises gives a 500 error.
* `options.num_predict` cuts the answer to that many pieces, with
  `"done_reason": "length"`, as a real model hitting its limit would.
* `GET /` and `HEAD /`: 200 `Ollama is running`. Any other route: 404.

Usage::

    with FakeOllama(reply=lambda messages: "Hello.") as fake:
        ollama.Client(host=fake.url).chat(model="qwen2.5:7b", messages=[...])
        fake.requests  # [{"method": "POST", "path": "/api/chat", "json": {...}}]
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Reply = Callable[[list[dict[str, Any]]], str]

_MODIFIED_AT = "2025-09-30T12:00:00.123456789+09:00"

# Hiragana, katakana, CJK ideographs and punctuation, Hangul, full-width forms.
_CJK = "\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff"
_PIECE_RE = re.compile(rf"\s*(?:[{_CJK}]{{1,3}}|[^\s{_CJK}]+)|\s+")
_TAG_PASSAGE_RE = re.compile(
    r"<passage\b[^>]*?\bn\s*=\s*[\"']?(\d+)[\"']?[^>]*>(.*?)</passage>", re.DOTALL
)
_LINE_PASSAGE_RE = re.compile(r"^[ \t]*\[(\d+)\][ \t]*(\S.*)$", re.MULTILINE)
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|[。！？]")

# name prefix -> (family / architecture, context length)
_FAMILIES = {
    "qwen": ("qwen2", 32768),
    "llama": ("llama", 131072),
    "gemma": ("gemma3", 131072),
    "mistral": ("llama", 32768),
    "phi": ("phi3", 131072),
}


def split_pieces(text: str) -> list[str]:
    """Split text the way a streaming model emits it: words with their leading
    whitespace, CJK text in pieces of up to 3 characters. `"".join()` of the
    result is always `text`."""
    return _PIECE_RE.findall(text)


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = _SENTENCE_END_RE.search(text)
    return text[: m.end()] if m else text


def find_passages(text: str) -> dict[int, str]:
    """Numbered passages in a prompt: `<passage n="1" ...>text</passage>`
    blocks, or else lines written as `[1] text`."""
    found = _TAG_PASSAGE_RE.findall(text) or _LINE_PASSAGE_RE.findall(text)
    passages: dict[int, str] = {}
    for number, body in found:
        passages.setdefault(int(number), body.strip())
    return passages


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """The default reply: quote the passages of the last user message.

    The first sentence of the lowest-numbered passage, cited as `[n]`, and if
    there are two or more passages the first sentence of the next one, cited
    too. Without passages: "I don't know.". A conversation-rewrite request (its user
    message ends with "Last message: ...") gets that last message back unchanged.
    """
    user = [m for m in messages if m.get("role") == "user"]
    last = str(user[-1].get("content") or "") if user else ""
    if "Last message:" in last:  # a request to rewrite a follow-up: echo it unchanged
        return last.rsplit("Last message:", 1)[1].strip()
    passages = find_passages(last) if user else {}
    parts = [
        f"{_first_sentence(passages[n])} [{n}]" for n in sorted(passages)[:2] if passages[n].strip()
    ]
    return " ".join(parts) if parts else "I don't know."


# -- replies as real models write them ---------------------------------------------------
# echo_reply always writes perfect `[n]` markers and a bare rewrite; real models do not.
# Each style turns the echo answer ("First. [1] Second. [2]") and the rewrite (a question)
# into what models are seen to write: other marker forms (Japanese output often uses
# 【1】 or ［１］), none at all, a chatty preamble, a <think> block before the answer, a
# reply cut at the length limit.

_ECHO_MARKER = re.compile(r"\s?\[(\d+)\]")
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _markers(text: str, form: Callable[[str], str]) -> str:
    return _ECHO_MARKER.sub(lambda m: form(m.group(1)), text)


def _numbers(text: str) -> list[str]:
    return _ECHO_MARKER.findall(text)


def _at_end(text: str, form: Callable[[list[str]], str]) -> str:
    return f"{_ECHO_MARKER.sub('', text)} {form(_numbers(text))}"


def _cut(text: str) -> str:
    """Cut inside the last marker, as a model stopped by its token limit leaves it."""
    last = text.rfind("[")
    return text[: last + 1] if last > 0 else text[: len(text) // 2]


REPLY_STYLES: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    # style: (answer from the echo answer, rewrite from the standalone question)
    "brackets": (lambda a: a, lambda q: q),
    "lenticular": (lambda a: _markers(a, lambda n: f"【{n}】"), lambda q: f"「{q}」"),
    "fullwidth": (
        lambda a: _markers(a, lambda n: f"［{n.translate(_FULLWIDTH)}］"),
        lambda q: f"書き換えた質問：「{q}」",
    ),
    "parens": (lambda a: _markers(a, lambda n: f" ({n})"), lambda q: f"**Question:** {q}"),
    "footnote": (
        lambda a: (
            _markers(a, lambda n: f"[^{n}]")
            + "".join(f"\n[^{n}]: passage {n}" for n in _numbers(a))
        ),
        lambda q: f"> {q}",
    ),
    "grouped": (lambda a: _at_end(a, lambda ns: f"[{', '.join(ns)}]"), lambda q: f'"{q}"'),
    "adjacent": (lambda a: _at_end(a, lambda ns: "".join(f"[{n}]" for n in ns)), lambda q: q),
    "none": (lambda a: _ECHO_MARKER.sub("", a), lambda q: q),
    "preamble": (
        lambda a: f"Sure! Here is the answer based on the passages:\n\n{a}",
        lambda q: f'Sure! Here is the standalone question:\n\n"{q}"',
    ),
    "think": (
        lambda a: (
            "<think>The user asks about this. Passage [3] looks unrelated, so I "
            f"will not cite it.</think>\n\n{a}"
        ),
        lambda q: f"<think>The user refers to the earlier question.</think>\n{q}",
    ),
    "cut": (_cut, lambda q: "<think>The user refers to the earlier question, so I"),
    "refusal": (lambda a: a, lambda q: "I'm sorry, but I can't help with that request."),
}


def styled_reply(style: str, standalone: str | None = None) -> Reply:
    """echo_reply in one of REPLY_STYLES; a rewrite request gets `standalone` (default:
    the last message) written in that style."""
    answer_style, rewrite_style = REPLY_STYLES[style]

    def reply(messages: list[dict[str, Any]]) -> str:
        text = echo_reply(messages)
        user = [m for m in messages if m.get("role") == "user"]
        if user and "Last message:" in str(user[-1].get("content") or ""):
            return rewrite_style(standalone or text)
        return answer_style(text)

    return reply


def _canonical(name: str) -> str:
    """`qwen2.5` and `qwen2.5:latest` are the same model, as in Ollama."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _token_count(text: str) -> int:
    return len(split_pieces(text))


class _Server(ThreadingHTTPServer):
    """Keeps track of its connections so that `stop()` can close idle
    keep-alive connections and join every handler thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeOllama, handler: type[BaseHTTPRequestHandler]) -> None:
        self.fake = fake
        self.conns: set[socket.socket] = set()
        self.workers: list[threading.Thread] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="fake-ollama-conn",
            daemon=True,
        )
        with self.lock:
            self.conns.add(request)
            self.workers = [w for w in self.workers if w.is_alive()]
            self.workers.append(worker)
        worker.start()

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive and chunked, like Ollama
    server_version = "FakeOllama"
    sys_version = ""
    timeout = 30  # seconds an idle connection may wait for its next request

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- dispatch -------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        fake._record({"method": method, "path": path, "json": body})

        get_like = method in ("GET", "HEAD")
        if path == "/" and get_like:
            return self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        if path == "/api/version" and get_like:
            return self._json(200, {"version": fake.version})
        if path == "/api/tags" and get_like:
            return self._json(200, {"models": [fake._tag(n) for n in fake.models]})
        if method != "POST" or path not in ("/api/show", "/api/chat", "/api/generate"):
            return self._send(404, b"404 page not found", "text/plain")

        if bad_json or not isinstance(body, dict):
            msg = "invalid request body" if bad_json else "missing request body"
            return self._json(400, {"error": msg})
        name = body.get("model") or body.get("name") or ""
        if not name:
            return self._json(400, {"error": "model is required"})
        if _canonical(name) not in fake.models:
            if path == "/api/show":
                return self._json(404, {"error": f"model '{name}' not found"})
            error = f"model {json.dumps(name)} not found, try pulling it first"
            return self._json(404, {"error": error})
        if path == "/api/show":
            return self._json(200, fake._show(_canonical(name)))
        self._generate(path == "/api/chat", name, body)

    # -- chat / generate --------------------------------------------------

    def _generate(self, chat: bool, name: str, body: dict[str, Any]) -> None:
        fake = self.server.fake
        started = time.monotonic_ns()
        if chat:
            messages = list(body.get("messages") or [])
        else:
            messages = [{"role": "user", "content": body.get("prompt") or ""}]
            if body.get("system"):
                messages.insert(0, {"role": "system", "content": body["system"]})
        try:
            text = fake.reply(messages)
        except Exception as exc:  # show a broken reply callable to the client
            return self._json(500, {"error": f"FakeOllama reply failed: {exc!r}"})
        pieces = split_pieces(text)
        done_reason = "stop"
        limit = (body.get("options") or {}).get("num_predict")
        if isinstance(limit, int) and 0 <= limit < len(pieces):
            pieces, done_reason = pieces[:limit], "length"

        def part(text: str) -> dict[str, Any]:
            if chat:
                return {
                    "model": name,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": text},
                    "done": False,
                }
            return {"model": name, "created_at": _now(), "response": text, "done": False}

        prompt_tokens = sum(_token_count(str(m.get("content") or "")) for m in messages)
        final = part("")
        final["done"] = True
        final["done_reason"] = done_reason
        if not chat:
            final["context"] = list(range(1, prompt_tokens + len(pieces) + 1))
        final.update(
            total_duration=0,
            load_duration=12_000_000,
            prompt_eval_count=prompt_tokens,
            prompt_eval_duration=prompt_tokens * 250_000,
            eval_count=len(pieces),
            eval_duration=len(pieces) * 20_000_000,
        )

        if body.get("stream") is False:
            if fake.die_after_chunks is not None:
                return self._die()  # no response at all
            if chat:
                final["message"]["content"] = "".join(pieces)
            else:
                final["response"] = "".join(pieces)
            final["total_duration"] = time.monotonic_ns() - started + 12_000_000
            return self._json(200, final, "application/json; charset=utf-8")

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, text in enumerate(pieces):
                if fake.die_after_chunks is not None and i >= fake.die_after_chunks:
                    return self._die()
                if fake.chunk_delay and fake._stopping.wait(fake.chunk_delay):
                    return self._die()
                self._chunk(part(text))
            if fake.die_after_chunks is not None:
                return self._die()  # never send the done line
            final["total_duration"] = time.monotonic_ns() - started + 12_000_000
            self._chunk(final)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up
            self.close_connection = True

    def _chunk(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _die(self) -> None:
        """Drop the connection mid-response, as a crashed server would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- plain responses --------------------------------------------------

    def _json(
        self, status: int, obj: Any, content_type: str = "application/json; charset=utf-8"
    ) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), content_type)

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class FakeOllama:
    """A fake Ollama server on 127.0.0.1 (see the module docstring).

    Args:
        models: model names it has "pulled"; `qwen2.5` means `qwen2.5:latest`.
        version: what `GET /api/version` reports.
        reply: `reply(messages) -> str`, the full assistant text. For
            `/api/generate` the messages are the optional system prompt and
            `{"role": "user", "content": prompt}`. Default: `echo_reply`.
        chunk_delay: seconds to wait before each streamed piece.
        die_after_chunks: send this many pieces of a streamed answer, then drop
            the connection without the done line (a non-streamed request gets
            its connection dropped with no response).

    Attributes:
        url: `http://127.0.0.1:PORT`, once started.
        requests: every request received, as `{"method", "path", "json"}`.
    """

    def __init__(
        self,
        models: Iterable[str] = ("qwen2.5:7b",),
        version: str = "0.12.3",
        reply: Reply | None = None,
        chunk_delay: float = 0.0,
        die_after_chunks: int | None = None,
    ) -> None:
        self.models: list[str] = [_canonical(m) for m in models]
        self.version = version
        self.reply: Reply = reply or echo_reply
        self.chunk_delay = chunk_delay
        self.die_after_chunks = die_after_chunks
        self.requests: list[dict[str, Any]] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOllama is not running; call start() first")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeOllama:
        if self._server is not None:
            raise RuntimeError("FakeOllama is already running")
        self._stopping.clear()
        self._server = _Server(self, self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-ollama",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and join every thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        thread.join()
        with server.lock:
            conns, workers = list(server.conns), list(server.workers)
        for conn in conns:  # wakes handlers waiting on idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for worker in workers:
            worker.join(timeout=5)
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- used by the handler ------------------------------------------------

    def _record(self, request: dict[str, Any]) -> None:
        with self._requests_lock:
            self.requests.append(request)

    def _family(self, name: str) -> tuple[str, int]:
        base = name.rsplit("/", 1)[-1].lower()
        for prefix, info in _FAMILIES.items():
            if base.startswith(prefix):
                return info
        return ("llama", 8192)

    def _details(self, name: str) -> dict[str, Any]:
        family = self._family(name)[0]
        m = re.search(r":(\d+(?:\.\d+)?)b\b", name.lower())
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": f"{m.group(1)}B" if m else "7.6B",
            "quantization_level": "Q4_K_M",
        }

    def _tag(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": _MODIFIED_AT,
            "size": 4_683_087_332,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": self._details(name),
        }

    def _show(self, name: str) -> dict[str, Any]:
        arch, context_length = self._family(name)
        template = (
            "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
        )
        parameters = 'stop                           "<|user|>"'
        blob = hashlib.sha256(name.encode()).hexdigest()
        return {
            "license": "",
            "modelfile": (
                '# Modelfile generated by "ollama show"\n'
                f"FROM /root/.ollama/models/blobs/sha256-{blob}\n"
                f'TEMPLATE """{template}"""\n'
                'PARAMETER stop "<|user|>"\n'
            ),
            "parameters": parameters,
            "template": template,
            "details": self._details(name),
            "model_info": {
                "general.architecture": arch,
                "general.file_type": 15,
                "general.parameter_count": 7_615_616_512,
                "general.quantization_version": 2,
                f"{arch}.context_length": context_length,
                f"{arch}.embedding_length": 3584,
                f"{arch}.block_count": 28,
            },
            "capabilities": ["completion", "tools"],
            "modified_at": _MODIFIED_AT,
        }
