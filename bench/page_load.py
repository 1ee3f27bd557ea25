"""Concurrent chat sessions against a running page, in a real browser.

    python bench/page_load.py [--sessions 20] [--rounds 3] [--soak SECONDS] [--ingest]

Starts the page (`taimatsu ui`) over an index of the bundled samples, with the
Ollama-protocol test server from tests/ollama_server.py standing in for Ollama (it
streams a reply quoting the passages; no model runs, so this measures the page, the
retrieval and the streaming, not generation). Then `--sessions` Chromium pages ask
questions at the same time, `--rounds` each, or for `--soak` seconds; with `--ingest`,
an ingestion run rewrites and re-ingests documents in a loop meanwhile. Reports errors
(target: none), answer latency percentiles, and the page process's memory at the start
and the end (its growth).
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
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from playwright.async_api import async_playwright  # noqa: E402

from tests.ollama_server import FakeOllama  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What does error VPN-0x2F mean?",
    "When are taxi fares reimbursed?",
    "How many unused leave days can I carry over?",
    "在宅勤務は週何日までですか",
    "社員食堂の昼食は1食いくらですか",
    "What is the minimum password length for new joiners?",
]
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


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the page is one Python process)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    return total / 1024


async def session(browser, url: str, n: int, rounds: int, until: float, out: dict) -> None:
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
            await answer.get_by_test_id("stExpander").first.wait_for()  # the final render
            await page.wait_for_selector(DONE)
            text = await answer.inner_text()
            if "[1]" not in text or await page.get_by_test_id("stException").count():
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


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeOllama(chunk_delay=0.01) as ollama:
        docs = Path(tmp) / "docs"
        shutil.copytree(ROOT / "samples", docs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_")}
        env.update(
            TAIMATSU_DATA_DIR=str(Path(tmp) / "data"),
            TAIMATSU_OLLAMA_HOST=ollama.url,
            TAIMATSU_LOCK_TIMEOUT="60",
            TAIMATSU_INGEST_WAIT="120",
        )
        exe = str(Path(sys.executable).with_name("taimatsu"))
        subprocess.run([exe, "ingest", "--quiet", str(docs)], env=env, check=True)
        port = 8600 + os.getpid() % 300
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
                memory_start = rss_mb(page_proc.pid)
                until = time.monotonic() + args.soak if args.soak else 0.0
                stop = asyncio.Event()
                ingest = (
                    asyncio.create_task(ingest_loop(docs, env, stop, out)) if args.ingest else None
                )
                sampler = asyncio.create_task(
                    sample_memory(page_proc.pid, stop, out, max(10.0, args.soak / 10))
                )
                started = time.monotonic()
                await asyncio.gather(
                    *(
                        session(browser, url, n, args.rounds, until, out)
                        for n in range(args.sessions)
                    )
                )
                elapsed = time.monotonic() - started
                stop.set()
                await sampler
                if ingest:
                    await ingest
                memory_end = rss_mb(page_proc.pid)
                await browser.close()
        finally:
            page_proc.terminate()
            page_proc.wait(timeout=30)
    report(args, out, elapsed, memory_start, memory_end)


def report(args, out: dict, elapsed: float, memory_start: float, memory_end: float) -> None:
    latency = sorted(out["latency"])

    def pct(q: float) -> float:
        return latency[min(len(latency) - 1, int(q * len(latency)))] if latency else float("nan")

    print(
        f"{args.sessions} sessions, {len(latency)} answers in {elapsed:.0f} s"
        f"{', ingestion runs alongside: ' + str(out.get('ingest_runs')) if args.ingest else ''}"
    )
    print(f"errors: {len(out['errors'])}")
    for error in out["errors"][:10]:
        print(f"  {error}")
    if latency:
        print(
            f"answer latency s: p50 {statistics.median(latency):.2f}  p90 {pct(0.9):.2f}  "
            f"p95 {pct(0.95):.2f}  p99 {pct(0.99):.2f}  max {latency[-1]:.2f}"
        )
    print(
        f"page memory MB: start {memory_start:.0f}  end {memory_end:.0f}  "
        f"growth {memory_end - memory_start:+.0f}"
    )
    if out["memory"]:
        series = "  ".join(f"{t / 60:.1f} min {mb:.0f}" for t, mb in out["memory"])
        print(f"page memory MB over time: {series}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="questions per session")
    parser.add_argument("--soak", type=float, default=0.0, help="keep asking for N seconds")
    parser.add_argument("--ingest", action="store_true", help="ingest in a loop meanwhile")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
