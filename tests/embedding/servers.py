"""Test stand-ins for model servers, on 127.0.0.1, standard library only
(`http.server.ThreadingHTTPServer` from a daemon thread, an ephemeral port).

- `EmbedServer` stands in for Ollama's embedding endpoint (`POST /api/embed`,
  `{"model", "input": [..]}` -> `{"model", "embeddings": [[..]]}`; an unknown model is
  404 `{"error": "model 'x' not found, try pulling it first"}`), and for an
  OpenAI-compatible `/v1/embeddings` (TEI, vLLM, llama.cpp, Infinity): Ollama cannot run
  on the test machines. The vectors are real: the packaged all-MiniLM-L6-v2 embeds each
  input, as the Ollama server with that model would. It can reset the first connections
  (`resets`), answer 503 first (`fail_first`), or be told another model's vectors
  (`vectors`), and records every request body.
- `RerankServer` stands in for a `/rerank` endpoint (Hugging Face TEI, vLLM, llama.cpp
  `--reranking`, Infinity): it scores each document by its MiniLM cosine with the query
  (a real ranking, if not a cross-encoder's) and answers in the `{"results": [{"index",
  "relevance_score"}]}` shape (vLLM, Infinity, llama.cpp, Jina, Cohere) or TEI's
  `[{"index", "score"}]`, which also takes its documents as `texts` and refuses
  `documents` with 422, as TEI does.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


class _Server:
    handler: type[BaseHTTPRequestHandler]

    def __enter__(self):  # noqa: ANN204
        outer = self

        class Handler(self.handler):
            server_owner = outer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _Json(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: Any

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0), before any answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class EmbedServer(_Server):
    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray],
        model: str = "all-minilm",
        resets: int = 0,
        fail_first: int = 0,
    ) -> None:
        self.embed = embed
        self.model = model
        self.resets = resets
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []  # the bodies of requests answered with vectors
        self.seen = 0  # every request, answered or not
        self.authorization: list[str | None] = []  # the header of each answered request
        self.lock = threading.Lock()

    class handler(_Json):  # noqa: N801
        def do_POST(self) -> None:  # noqa: N802
            owner: EmbedServer = self.server_owner
            body = self._body()
            with owner.lock:
                owner.seen += 1
                if owner.resets:
                    owner.resets -= 1
                    return self._reset()
                if owner.fail_first:
                    owner.fail_first -= 1
                    return self._send(503, {"error": "loading model"})
            if body.get("model") != owner.model:
                return self._send(404, {"error": f"model '{body.get('model')}' not found"})
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            vectors = owner.embed(texts)
            with owner.lock:
                owner.requests.append(body)
                owner.authorization.append(self.headers.get("Authorization"))
            if self.path == "/api/embed":
                embeddings = [[float(x) for x in row] for row in vectors]
                return self._send(200, {"model": owner.model, "embeddings": embeddings})
            if self.path in ("/v1/embeddings", "/embeddings"):
                data = [
                    {"object": "embedding", "index": i, "embedding": [float(x) for x in row]}
                    for i, row in reversed(list(enumerate(vectors)))  # any order: by index
                ]
                return self._send(200, {"object": "list", "data": data, "model": owner.model})
            return self._send(404, {"error": "unknown route"})


class RerankServer(_Server):
    def __init__(self, embed: Callable[[list[str]], np.ndarray], shape: str = "results") -> None:
        self.embed = embed
        self.shape = shape  # "results" (vLLM, Infinity, llama.cpp, Jina, Cohere) or "tei"
        self.requests: list[dict[str, Any]] = []

    class handler(_Json):  # noqa: N801
        def do_POST(self) -> None:  # noqa: N802
            owner: RerankServer = self.server_owner
            body = self._body()
            owner.requests.append(body)
            if self.path != "/rerank":
                return self._send(404, {"error": "unknown route"})
            field = "texts" if owner.shape == "tei" else "documents"
            if field not in body:  # TEI's schema: `documents` is refused
                return self._send(422, {"error": f"missing field `{field}`", "error_type": "422"})
            docs = body[field]
            vectors = owner.embed([body["query"], *docs])
            scores = vectors[1:] @ vectors[0]
            order = sorted(range(len(docs)), key=lambda i: -scores[i])
            if owner.shape == "tei":
                return self._send(200, [{"index": i, "score": float(scores[i])} for i in order])
            top = order[: body.get("top_n") or len(docs)]
            results = [{"index": i, "relevance_score": float(scores[i])} for i in top]
            return self._send(200, {"model": "test-reranker", "results": results})
