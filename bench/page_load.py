"""Concurrent chat sessions against a running page, in a real browser.

    python bench/page_load.py [--sessions 20] [--rounds 3] [--soak SECONDS] [--ingest]
                              [--real-model [--max-new-tokens 48]]

Starts the page (`taimatsu ui`) over an index of the bundled samples, with the
Ollama-protocol test server from tests/ollama_server.py standing in for Ollama (it
streams a reply quoting the passages; no model runs, so this measures the page, the
retrieval and the streaming, not generation). Then `--sessions` Chromium pages ask
questions at the same time, `--rounds` each, or for `--soak` seconds; with `--ingest`,
an ingestion run rewrites and re-ingests documents in a loop meanwhile. Reports errors
(target: none), answer latency percentiles, and the page process's memory at the start
and the end (its growth).

With `--real-model`, the same load runs a second time in the same run, over the same
index, against a real model: SmolLM2-135M-Instruct (transformers on the CPU, greedy, at
most `--max-new-tokens` tokens an answer, one generation at a time) behind the protocol
server in tests/real_model.py; the two are printed side by side, with the tokens written
per second of the load (the canned server's pieces count as tokens). A real answer need
not cite: it is an error when it is empty (a timeout), says no model wrote it, or the
page fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from playwright.async_api import async_playwright  # noqa: E402

from bench.questions import QUESTIONS  # noqa: E402
from tests.ollama_server import FakeOllama, echo_reply, split_pieces  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
# the text of the answer to the question asked after `before` messages, once it is
# finished (the run over, no cursor) and not empty; false until then
ANSWERED = """(before) => {
    const app = document.querySelector('[data-testid="stApp"]');
    const messages = document.querySelectorAll('[data-testid="stChatMessage"]');
    if (!app || app.dataset.testScriptState !== "notRunning" || messages.length < before + 2)
        return false;
    const content = messages[before + 1].querySelector('[data-testid="stChatMessageContent"]');
    const text = content ? content.innerText : "";
    return text.trim() && !text.includes("\u258c") ? text : false;
}"""


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the page is one Python process)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    return total / 1024


async def session(
    browser, url: str, n: int, rounds: int, until: float, out: dict, real: bool = False
) -> None:
    context = await browser.new_context(locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(300_000)
    try:
        await page.goto(url)
        await page.wait_for_selector(DONE)
        asked = 0
        while asked < rounds or time.monotonic() < until:
            question = QUESTIONS[(n + asked) % len(QUESTIONS)]
            before = await page.get_by_test_id("stChatMessage").count()
            box = page.get_by_test_id("stChatInputTextArea")
            await box.fill(question)
            start = time.monotonic()
            await box.press("Enter")
            answer = page.get_by_test_id("stChatMessage").nth(before + 1)
            if real:  # a real answer need not cite: wait for its finished text
                # one generation at a time: the last of 20 sessions waits for 19 others
                done = await page.wait_for_function(
                    ANSWERED, arg=before, polling=250, timeout=3_600_000
                )
                text = await done.json_value()
                bad = await answer.get_by_test_id("stAlert").count()  # "no model wrote it"
            else:
                await answer.get_by_test_id("stExpander").first.wait_for()  # the final render
                await page.wait_for_selector(DONE)
                text = await answer.inner_text()
                bad = "[1]" not in text
            if bad or await page.get_by_test_id("stException").count():
                out["errors"].append(f"session {n}: bad answer to {question!r}: {text[:80]!r}")
            out["latency"].append(time.monotonic() - start)
            asked += 1
            if asked >= rounds and not until:
                break
    except Exception as exc:  # noqa: BLE001 - every failure is a reported error
        out["errors"].append(f"session {n}: {exc.__class__.__name__}: {str(exc)[:200]}")
    finally:
        await context.close()


async def ingest_loop(docs: Path, env: dict, stop: asyncio.Event, out: dict) -> None:
    exe = str(Path(sys.executable).with_name("taimatsu"))
    target = docs / "en" / "it-onboarding.txt"
    original = target.read_text(encoding="utf-8")
    runs = 0
    while not stop.is_set():
        target.write_text(original + f"\nRevision {runs}.\n", encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            exe,
            "ingest",
            "--quiet",
            str(docs),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            out["errors"].append(f"ingest run {runs}: exit {proc.returncode}: {err[:200]!r}")
        runs += 1
    out["ingest_runs"] = runs


async def sample_memory(pid: int, stop: asyncio.Event, out: dict, every: float) -> None:
    """The page's memory every `every` seconds while the sessions run: a leak shows as a
    series that keeps climbing, a warm-up as one that levels off."""
    started = time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            out["memory"].append((time.monotonic() - started, rss_mb(pid)))


async def load(
    args: argparse.Namespace,
    env: dict,
    docs: Path,
    model_url: str,
    warmed: Callable[[], None],
    real: bool = False,
) -> dict:
    """Serve the page with the model server at `model_url` and run the sessions on it;
    `warmed()` is called once the warm-up question is answered."""
    exe = str(Path(sys.executable).with_name("taimatsu"))
    env = {**env, "TAIMATSU_OLLAMA_HOST": model_url}
    if real:
        from tests.real_model import MODEL

        env["TAIMATSU_LLM_MODEL"] = MODEL
    port = 8600 + (os.getpid() + 7 * real) % 300
    page_proc = subprocess.Popen(
        [exe, "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    out: dict = {"errors": [], "latency": [], "memory": []}
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            warm = await browser.new_page()  # the first question loads the model
            warm.set_default_timeout(300_000)  # a loaded machine starts the page slowly
            for _ in range(120):
                try:
                    await warm.goto(url)
                    break
                except Exception:  # noqa: BLE001 - the page is still starting
                    await asyncio.sleep(0.5)
            await warm.wait_for_selector(DONE)
            await warm.get_by_test_id("stChatInputTextArea").fill("warm up")
            await warm.get_by_test_id("stChatInputTextArea").press("Enter")
            await warm.get_by_test_id("stChatMessage").nth(1).wait_for(timeout=300_000)
            await warm.wait_for_selector(DONE, timeout=300_000)
            await warm.close()
            warmed()
            memory_start = rss_mb(page_proc.pid)
            until = time.monotonic() + args.soak if args.soak else 0.0
            stop = asyncio.Event()
            ingest = asyncio.create_task(ingest_loop(docs, env, stop, out)) if args.ingest else None
            sampler = asyncio.create_task(
                sample_memory(page_proc.pid, stop, out, max(10.0, args.soak / 10))
            )
            started = time.monotonic()
            await asyncio.gather(
                *(
                    session(browser, url, n, args.rounds, until, out, real)
                    for n in range(args.sessions)
                )
            )
            out["elapsed"] = time.monotonic() - started
            stop.set()
            await sampler
            if ingest:
                await ingest
            out["memory_start"], out["memory_end"] = memory_start, rss_mb(page_proc.pid)
            await browser.close()
    finally:
        page_proc.terminate()
        page_proc.wait(timeout=30)
    return out


async def main_async(args: argparse.Namespace) -> None:
    runs: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        shutil.copytree(ROOT / "samples", docs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_")}
        env.update(
            TAIMATSU_DATA_DIR=str(Path(tmp) / "data"),
            TAIMATSU_LOCK_TIMEOUT="60",
            TAIMATSU_INGEST_WAIT="120",
        )
        exe = str(Path(sys.executable).with_name("taimatsu"))
        subprocess.run([exe, "ingest", "--quiet", str(docs)], env=env, check=True)
        with FakeOllama(chunk_delay=0.01) as ollama:
            seen = [0]
            out = await load(
                args, env, docs, ollama.url, lambda: seen.__setitem__(0, len(ollama.requests))
            )
            asked = [r["json"] for r in ollama.requests[seen[0] :] if r["path"] == "/api/chat"]
            out["tokens"] = sum(len(split_pieces(echo_reply(b["messages"]))) for b in asked)
        runs.append(("canned (test server)", out))
        if args.real_model:
            from tests.real_model import RealModelServer, SmolLM

            with RealModelServer(SmolLM(args.max_new_tokens)) as server:
                before = [0, 0.0]

                def warmed() -> None:
                    before[:] = [server.tokens, server.generation_seconds]

                out = await load(args, env, docs, server.url, warmed, real=True)
                out["tokens"] = server.tokens - before[0]
                out["generation_seconds"] = server.generation_seconds - before[1]
            runs.append((f"SmolLM2-135M (≤{args.max_new_tokens} tokens)", out))
    report(args, runs)


def report(args, runs: list[tuple[str, dict]]) -> None:
    print(
        f"{args.sessions} sessions, {args.rounds} rounds"
        f"{f', soak {args.soak:.0f} s' if args.soak else ''}"
        f"{', ingestion alongside' if args.ingest else ''}"
    )
    header = "| model | answers | seconds | errors | latency p50 / p90 / p95 / p99 / max s"
    print(f"{header} | tokens/s | page memory MB start -> end |")
    for name, out in runs:
        latency = sorted(out["latency"])

        def pct(q: float, latency=latency) -> float:
            return latency[min(len(latency) - 1, int(q * len(latency)))]

        if latency:
            spread = (
                f"{statistics.median(latency):.1f} / {pct(0.9):.1f} / {pct(0.95):.1f} / "
                f"{pct(0.99):.1f} / {latency[-1]:.1f}"
            )
        else:
            spread = "-"
        elapsed = out.get("elapsed") or float("nan")
        print(
            f"| {name} | {len(latency)} | {elapsed:.0f} | {len(out['errors'])} | {spread} | "
            f"{out['tokens'] / elapsed:.1f} | "
            f"{out.get('memory_start', 0):.0f} -> {out.get('memory_end', 0):.0f} |"
        )
    for name, out in runs:
        for error in out["errors"][:10]:
            print(f"  {name}: {error}")
        if out.get("ingest_runs") is not None:
            print(f"  {name}: ingestion runs alongside: {out['ingest_runs']}")
        if out.get("generation_seconds"):
            rate = out["tokens"] / out["generation_seconds"]
            print(f"  {name}: {out['tokens']} tokens, {rate:.1f} tokens/s while generating")
        if out["memory"]:
            series = "  ".join(f"{t / 60:.1f} min {mb:.0f}" for t, mb in out["memory"])
            print(f"  {name}: page memory MB over time: {series}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="questions per session")
    parser.add_argument("--soak", type=float, default=0.0, help="keep asking for N seconds")
    parser.add_argument("--ingest", action="store_true", help="ingest in a loop meanwhile")
    parser.add_argument(
        "--real-model", action="store_true", help="then the same load on SmolLM2-135M"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48, help="of a real answer")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
