"""A test double of an OpenAI-compatible model server, served on 127.0.0.1.

It stands in for vLLM, llama.cpp's llama-server, LM Studio, LocalAI or LiteLLM, which
cannot run on the test machines. The real `openai` client and llama-index's `OpenAILike`
talk to it over HTTP, exactly as they would talk to those servers. No model runs in it:
every answer comes from the same `reply` callables as the Ollama test server
(tests/ollama_server.py: `echo_reply` by default, `styled_reply` for replies written the
way real models write them), and it shares that server's threads, shutdown and fault
switches (`chunk_delay`, `die_after_chunks`).

Wire format, as vLLM sends it (the base URL is `http://127.0.0.1:PORT/v1`):

* `GET /v1/models`: `{"object": "list", "data": [{"id": ..., "object": "model", ...}]}`.
* `POST /v1/chat/completions`: with `"stream": true`, server-sent events over chunked
  transfer encoding — `data: {chunk}` lines whose `choices[0].delta.content` is a piece
  of text, a last chunk with `finish_reason`, then `data: [DONE]`; otherwise one
  `chat.completion` object. `max_tokens` cuts the answer to that many pieces with
  `finish_reason: "length"`.
* Errors: an unknown model is 404 `{"error": {"message": "The model `x` does not
  exist.", "type": "NotFoundError", "code": 404}}`; with `api_key` set, a request without
  `Authorization: Bearer <key>` is 401 `{"error": "Unauthorized"}`; any other route is
  404 `{"detail": "Not Found"}` (FastAPI's). A `reply` callable that raises gives a 500.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.ollama_server import FakeOllama, Reply, _Handler, split_pieces


class _OpenAIHandler(_Handler):
    server_version = "uvicorn"

    def _route(self, method: str) -> None:
        fake: FakeOpenAI = self.server.fake  # type: ignore[assignment]
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = self.headers.get("Authorization")
        fake._record({"method": method, "path": path, "json": body, "authorization": auth})
        if fake.api_key is not None and auth != f"Bearer {fake.api_key}":
            return self._json(401, {"error": "Unauthorized"})
        if path == "/v1/models" and method == "GET":
            data = [
                {
                    "id": m,
                    "object": "model",
                    "created": 1,
                    "owned_by": "vllm",
                    "max_model_len": 8192,
                }
                for m in fake.models
            ]
            return self._json(200, {"object": "list", "data": data})
        if path != "/v1/chat/completions" or method != "POST":
            return self._json(404, {"detail": "Not Found"})
        if not isinstance(body, dict):
            return self._json(400, {"error": {"message": "invalid body", "code": 400}})
        name = str(body.get("model") or "")
        if name not in fake.models:
            error = {
                "message": f"The model `{name}` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            }
            return self._json(404, {"error": error})
        self._complete(name, body)

    def _complete(self, name: str, body: dict[str, Any]) -> None:
        fake: FakeOpenAI = self.server.fake  # type: ignore[assignment]
        messages = list(body.get("messages") or [])
        try:
            text = fake.reply(messages)
        except Exception as exc:  # show a broken reply callable to the client
            return self._json(500, {"error": {"message": f"reply failed: {exc!r}", "code": 500}})
        pieces = split_pieces(text)
        finish = "stop"
        limit = body.get("max_tokens")
        if isinstance(limit, int) and 0 <= limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        prompt_tokens = sum(len(split_pieces(str(m.get("content") or ""))) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        if not body.get("stream"):
            if fake.die_after_chunks is not None:
                return self._die()
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(pieces)},
                "finish_reason": finish,
            }
            return self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "choices": [choice],
                    "usage": usage,
                },
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if fake.die_after_chunks == 0:
                return self._die()  # a reset before anything: worth a retry
            self._event(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                if fake.die_after_chunks is not None and i >= fake.die_after_chunks:
                    return self._die()
                if fake.chunk_delay and fake._stopping.wait(fake.chunk_delay):
                    return self._die()
                self._event(chunk({"content": piece}))
            if fake.die_after_chunks is not None:
                return self._die()  # never send the finish chunk nor [DONE]
            self._event(chunk({}, finish))
            self._send_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up
            self.close_connection = True

    def _event(self, obj: dict[str, Any]) -> None:
        self._send_chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


class FakeOpenAI(FakeOllama):
    """An OpenAI-compatible test server on 127.0.0.1 (see the module docstring).

    Args:
        models: the model ids it serves, exactly as given (no `:latest`).
        api_key: the key it requires as a Bearer token; None = no key needed.
        reply, chunk_delay, die_after_chunks: as for FakeOllama.

    Attributes:
        url: the base URL clients are given, `http://127.0.0.1:PORT/v1`.
        requests: every request, as `{"method", "path", "json", "authorization"}`.
    """

    def __init__(
        self,
        models: Iterable[str] = ("qwen2.5:7b",),
        api_key: str | None = None,
        reply: Reply | None = None,
        chunk_delay: float = 0.0,
        die_after_chunks: int | None = None,
    ) -> None:
        super().__init__(reply=reply, chunk_delay=chunk_delay, die_after_chunks=die_after_chunks)
        self.models = list(models)
        self.api_key = api_key

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _OpenAIHandler

    @property
    def url(self) -> str:
        return super().url + "/v1"

    def start(self) -> FakeOpenAI:
        super().start()
        return self

    def __enter__(self) -> FakeOpenAI:
        return self.start()
