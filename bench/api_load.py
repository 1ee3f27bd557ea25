"""Concurrent API clients against a running `taimatsu api`, on loopback.

    python bench/api_load.py [--clients 50] [--seconds 300]

Ingests the bundled samples into a fresh index, starts the Ollama-protocol test server
from tests/ollama_server.py in place of Ollama (it streams a reply quoting the passages;
no model runs, so this measures the API, retrieval and streaming, not generation), then
`taimatsu api` as its own process, and makes one API token per client. `--clients`
clients then send requests back to back for `--seconds`, each in turn: an OpenAI chat
completion (not streamed), the same streamed, `POST /api/ask`, `GET /api/search`, and
every tenth turn an MCP `ask` (a JSON-RPC `tools/call` over the streamable-HTTP
transport). The per-token rate limit is off for the run (TAIMATSU_API_RATE_LIMIT=0):
50 clients sending back to back is the load, not abuse.

Reports errors (target: none; an error is a non-200, a broken stream, an answer without
a `[n]` citation or a search without hits), latency percentiles per kind and overall,
requests per second, and the server process's memory: at the start of the load, its
peak (sampled every half second), and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx  # noqa: E402

from assistant.settings import Settings  # noqa: E402
from assistant.tokens import TokenStore  # noqa: E402
from bench.questions import QUESTIONS  # noqa: E402
from tests.api.server import free_port  # noqa: E402
from tests.ollama_server import FakeOllama  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["chat", "chat-stream", "ask", "search"]
MCP_EVERY = 10


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def one(http: httpx.AsyncClient, kind: str, question: str) -> str | None:
    """Send one request of `kind`; None when it went right, else what went wrong."""
    chat = {"model": "taimatsu", "messages": [{"role": "user", "content": question}]}
    if kind == "chat":
        r = await http.post("/v1/chat/completions", json=chat)
        if r.status_code != 200:
            return f"chat {r.status_code}: {r.text[:120]}"
        body = r.json()
        text = body["choices"][0]["message"]["content"]
        return None if "[1]" in text and body["citations"] else f"chat uncited: {text[:80]!r}"
    if kind == "chat-stream":
        text, done, cited = "", False, False
        async with http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
            if r.status_code != 200:
                return f"stream {r.status_code}"
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    text += chunk["choices"][0]["delta"].get("content") or ""
                    cited = cited or bool(chunk.get("citations"))
        return None if done and cited and "[1]" in text else f"stream broken: {text[:80]!r}"
    if kind == "ask":
        r = await http.post("/api/ask", json={"question": question})
        if r.status_code != 200:
            return f"ask {r.status_code}: {r.text[:120]}"
        body = r.json()
        return None if body["citations"] else f"ask uncited: {body['answer'][:80]!r}"
    if kind == "search":
        r = await http.get("/api/search", params={"q": question, "k": 5})
        if r.status_code != 200:
            return f"search {r.status_code}"
        return None if r.json()["hits"] else "search without hits"
    if kind == "mcp":
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "ask", "arguments": {"question": question}},
        }
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-06-18",
        }
        r = await http.post("/mcp", json=call, headers=headers)
        if r.status_code != 200:
            return f"mcp {r.status_code}: {r.text[:120]}"
        result = r.json().get("result", {})
        content = result.get("structuredContent") or {}
        ok = not result.get("isError") and content.get("citations")
        return None if ok else f"mcp: {r.text[:120]}"
    raise ValueError(kind)


async def client(url: str, token: str, n: int, until: float, out: dict) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as http:
        turn = 0
        while time.monotonic() < until:
            kind = "mcp" if turn % MCP_EVERY == MCP_EVERY - 1 else KINDS[(n + turn) % len(KINDS)]
            question = QUESTIONS[(n + turn) % len(QUESTIONS)]
            start = time.monotonic()
            try:
                problem = await one(http, kind, question)
            except Exception as exc:  # noqa: BLE001 - every failure is a reported error
                problem = f"{kind}: {exc.__class__.__name__}: {str(exc)[:160]}"
            out["latency"][kind].append(time.monotonic() - start)
            if problem:
                out["errors"].append(f"client {n}: {problem}")
            turn += 1


async def sample_memory(pid: int, stop: asyncio.Event, out: dict) -> None:
    while not stop.is_set():
        out["rss"].append(rss_mb(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def load(url: str, tokens: list[str], seconds: float, pid: int) -> dict:
    out: dict = {"latency": defaultdict(list), "errors": [], "rss": []}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(pid, stop, out))
    start = time.monotonic()
    until = start + seconds
    await asyncio.gather(*(client(url, t, n, until, out) for n, t in enumerate(tokens)))
    out["elapsed"] = time.monotonic() - start
    stop.set()
    await sampler
    return out


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"taimatsu api exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("taimatsu api did not start within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()

    exe = str(Path(sys.executable).with_name("taimatsu"))
    work = Path(tempfile.mkdtemp(prefix="taimatsu-api-load-"))
    server = FakeOllama().start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_")}
        env.update(
            TAIMATSU_DATA_DIR=str(work / "data"),
            TAIMATSU_OLLAMA_HOST=server.url,
            TAIMATSU_API_RATE_LIMIT="0",
            TAIMATSU_LOCK_TIMEOUT="60",
            HF_HUB_OFFLINE="1",
        )
        started = time.monotonic()
        subprocess.run(
            [exe, "ingest", "--quiet", str(ROOT / "samples")], env=env, check=True, cwd=work
        )
        print(f"ingested the samples in {time.monotonic() - started:.1f} s", flush=True)
        store = TokenStore(Settings(data_dir=work / "data"))
        tokens = [store.create(f"client-{n}", ["everyone"])[0] for n in range(args.clients)]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = work / "api.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [exe, "api", "--port", str(port)],
                env=env,
                cwd=work,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(url, proc, log)
            # one request first: the embedding model loads once, not inside the timing
            asyncio.run(_warm(url, tokens[0]))
            print(
                f"{args.clients} clients for {args.seconds:g} s against {url} "
                f"(server pid {proc.pid}, {rss_mb(proc.pid):.0f} MB)",
                flush=True,
            )
            result = asyncio.run(load(url, tokens, args.seconds, proc.pid))
            end_rss = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        report(args, result, end_rss)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


async def _warm(url: str, token: str) -> None:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
    ) as http:
        problem = await one(http, "ask", QUESTIONS[0])
        if problem:
            raise SystemExit(f"the first request failed: {problem}")


def report(args: argparse.Namespace, result: dict, end_rss: float) -> None:
    everything = [t for times in result["latency"].values() for t in times]
    print()
    print(
        f"requests: {len(everything)} in {result['elapsed']:.0f} s "
        f"({len(everything) / result['elapsed']:.1f}/s), errors: {len(result['errors'])}"
    )
    print(f"{'kind':<12} {'count':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}   (seconds)")
    for kind, times in sorted(result["latency"].items()) + [("all", everything)]:
        print(
            f"{kind:<12} {len(times):>6} {percentile(times, 50):>8.3f} "
            f"{percentile(times, 95):>8.3f} {percentile(times, 99):>8.3f} {max(times):>8.3f}"
        )
    rss = result["rss"] or [end_rss]
    print(
        f"server memory: {rss[0]:.0f} MB at the start, peak {max(rss):.0f} MB, "
        f"{end_rss:.0f} MB at the end"
    )
    if result["errors"]:
        print("first errors:")
        for line in result["errors"][:10]:
            print(f"  {line}")


if __name__ == "__main__":
    main()
