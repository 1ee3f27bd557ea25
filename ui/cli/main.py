"""The `taimatsu` command line: ingest, reindex, search, ask, status, ui, api, bundle, eval,
token.

Exit codes: 0 success; 1 the command failed (bad folder or ACL file, index locked or
built by another model...); 2 wrong usage; 3 the ingestion run finished but some files
could not be read (listed in `failed`); 4 another ingestion run holds the index, this
one did nothing. The codes, the failure line and the one catch of TaimatsuError for every
command are in ui/cli/common.py.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from assistant.errors import TaimatsuError
from assistant.settings import Settings
from bundle.cli import bundle_app
from bundle.install import BundleError
from bundle.ollama import OllamaSourceError
from ui.cli.common import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Commands, fail, setup_logging
from ui.cli.eval import eval_command
from ui.cli.progress import progress_bar
from ui.cli.tokens import token_app
from ui.web.oidc import streamlit_args

app = typer.Typer(
    cls=Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Taimatsu: cited answers from your own documents, on your own hardware.",
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
GroupsOpt = Annotated[
    str | None,
    typer.Option("--groups", help="Comma-separated groups of the asker (default: settings)."),
]


def _groups(settings: Settings, groups: str | None) -> list[str]:
    if groups is None:
        return list(settings.default_groups)
    parsed = [g.strip() for g in groups.split(",") if g.strip()]
    if not parsed:
        raise typer.BadParameter("give at least one group name", param_hint="--groups")
    return parsed


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@app.command()
def ingest(
    path: Annotated[
        str,
        typer.Argument(
            help="Folder of documents, read recursively; or a remote source's URL: "
            "http(s)://host/path/, webdav(s)://host/path/, imap(s)://user@host/INBOX "
            "(see Sources in the README)."
        ),
    ],
    as_json: JsonOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing when nothing changed.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="I/N: this worker takes the I-th of N shares of the files."),
    ] = None,
    allow_open: Annotated[
        bool,
        typer.Option(
            "--allow-open",
            help="The rules file that was in force is gone on purpose: its documents "
            "become readable by everyone (without this flag such a run stops).",
        ),
    ] = False,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="The folder lost all or most of its documents on purpose: delete them "
            "from the index (without this flag such a run stops).",
        ),
    ] = False,
) -> None:
    """Bring the index in line with a folder or a remote source: add, update and remove
    documents."""
    from ingest.pipeline import Ingestor, Shard
    from ingest.remote import is_url, source_for

    try:
        share = Shard.parse(shard) if shard else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None
    settings = Settings()
    remote = None
    folder = Path(path)
    if is_url(path):
        if share is not None:
            raise typer.BadParameter("a remote source is fetched by one worker", "--shard")
        remote = source_for(settings, path, allow_mass_delete=allow_mass_delete)
        folder = remote.mirror.root
    show_bar = sys.stderr.isatty() and not (quiet or as_json)
    with progress_bar(show_bar) as progress:
        ingestor = Ingestor(settings, allow_open=allow_open, allow_mass_delete=allow_mass_delete)
        summary = ingestor.run(folder, progress, share, remote)
    if as_json:
        _print_json(summary.as_json())
    elif summary.changed or not quiet:
        typer.echo(f"{datetime.now().astimezone():%Y-%m-%dT%H:%M:%S%z} ingest {summary.line()}")
    for failure in summary.failed:
        typer.echo(f"failed: {failure['source']}: {failure['error']}", err=True)
    raise typer.Exit(EXIT_PARTIAL if summary.failed else EXIT_OK)


@app.command()
def reindex(as_json: JsonOpt = False) -> None:
    """Rebuild the whole index from its source folders with the configured embedding
    model (after changing the model). The old index answers until the new one is ready."""
    from assistant.index import open_index
    from ingest.pipeline import Ingestor, ingest_lock

    settings = Settings()
    index = open_index(settings)
    with ingest_lock(settings):
        roots = index.roots()
        if not roots:
            raise fail("the index is empty; run `taimatsu ingest FOLDER` instead")
        missing = [root for root in roots if not Path(root).is_dir()]
        if missing:
            raise fail(
                f"the source folder {missing[0]} is gone; restore it (or mount it) "
                "and run `taimatsu reindex` again — nothing was changed"
            )
        staging = index.staging()
        ingestor = Ingestor(settings, index=staging, replaces=index)
        show_bar = sys.stderr.isatty() and not as_json
        summaries = []
        try:
            for root in roots:
                with progress_bar(show_bar) as progress:
                    summaries.append(ingestor.sync(Path(root), progress))
        finally:
            ingestor.close()
        staging.refresh_keyword_counts()  # the rebuilt index comes with its keyword IDF table
        staging.optimize()  # and its vector index: nobody reads it yet, so build it in place
        index.promote(staging)
    if as_json:
        _print_json({"reindexed": [summary.as_json() for summary in summaries]})
    else:
        for summary in summaries:
            typer.echo(f"reindex {summary.line()}")
    failed = [f for summary in summaries for f in summary.failed]
    for failure in failed:
        typer.echo(f"failed: {failure['source']}: {failure['error']}", err=True)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The query, or - to read one per line from stdin.")],
    as_json: JsonOpt = False,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Number of hits.")] = 5,
    groups: GroupsOpt = None,
) -> None:
    """Find the passages that best match a query."""
    from assistant.retrieval import Searcher

    settings = Settings()
    asker = _groups(settings, groups)
    searcher = Searcher(settings)
    queries = (line.rstrip("\n") for line in sys.stdin) if query == "-" else iter([query])
    as_json = as_json or query == "-"  # a batch from stdin is for programs: JSON lines
    for text in queries:
        hits = searcher.search(text, asker, k)
        if as_json:
            _print_json({"query": text, "hits": [h.as_hit_json() for h in hits]})
            continue
        if not hits:
            typer.echo(f"no passages found for {text!r}")
        for hit in hits:
            snippet = _snippet(hit.text, 200)
            typer.echo(f"{hit.rank}. {hit.where}  ({hit.score:.4f})\n   {snippet}")


@app.command()
def ask(
    question: Annotated[
        str,
        typer.Argument(
            help="The question, in English or Japanese, or - to read one per line from stdin."
        ),
    ],
    as_json: JsonOpt = False,
    groups: GroupsOpt = None,
) -> None:
    """Answer a question from the documents, with numbered citations."""
    from assistant.answering import Answerer
    from assistant.retrieval import Searcher

    settings = Settings()
    asker = _groups(settings, groups)
    # the answer says why no model wrote it: the log's line about the server repeats it
    logging.getLogger("assistant.answering.llm").setLevel(logging.ERROR)
    answerer = Answerer(settings, Searcher(settings))  # the model loads once for every line
    if question != "-":
        _answer_one(answerer, question, asker, as_json)
        return
    as_json = True  # a batch from stdin is for programs: one JSON object per line
    failed = 0
    for line in sys.stdin:
        text = line.strip()
        if not text:
            continue
        try:
            _answer_one(answerer, text, asker, as_json)
        except TaimatsuError as exc:  # one bad line (too long...) does not stop the others
            failed += 1
            if as_json:
                _print_json({"question": text, "error": str(exc)})
            else:
                typer.echo(f"taimatsu: error: {exc}", err=True)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _answer_one(answerer: Any, question: str, asker: list[str], as_json: bool) -> None:
    from assistant.answering import AnswerDone, Mode, TextDelta

    for event in answerer.stream(question, asker):
        if isinstance(event, TextDelta) and not as_json:
            typer.echo(event.text, nl=False)
        elif isinstance(event, AnswerDone):
            answer = event.answer
    if as_json:
        _print_json(answer.as_json())
        return
    generated = answer.mode == Mode.GENERATED
    if not generated:
        typer.echo(answer.answer, nl=False)
    typer.echo("\n")
    for n, passage in answer.citations:
        typer.echo(f"[{n}] {passage.where}")
        if not generated:  # no model wrote an answer: the passages are the answer
            typer.echo(f"    {_snippet(passage.text, 300)}")


def _snippet(text: str, limit: int) -> str:
    """A passage on one line, cut at a word (or, in Japanese, a character) near `limit`."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 0.8 else cut) + " …"


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Show the health of the index and of the model server."""
    from assistant.status import collect
    from ingest.parsing.ocr import ocr_status
    from ingest.runs import ingest_status

    settings = Settings()
    report = collect(settings)
    report["ocr"] = ocr_status()
    report["ingest"] = ingest_status(
        settings.data_dir, settings.permissions, _counts_by_root(settings)
    )
    if as_json:
        _print_json(report)
    else:
        index, llm = report["index"], report["llm"]
        typer.echo(
            f"index: {'ok' if index['healthy'] else 'NOT OK'} - {index['documents']} documents, "
            f"{index['chunks']} chunks, model {index['embedding_model'].get('name')} "
            f"({index['backend']})"
        )
        version = f" version {llm['version']}," if llm.get("version") else ""
        present = "present" if llm["model_present"] else "missing"
        typer.echo(
            f"llm: {'ok' if llm['reachable'] and llm['model_present'] else 'NOT OK'} - "
            f"{llm['backend']} at {llm['url']}{version} model {llm['model']} "
            f"{present if llm['reachable'] else 'not checked (the server is unreachable)'}"
        )
        ocr = report["ocr"]
        typer.echo(
            f"ocr: {'tesseract ' + ocr['version'] if ocr['available'] else 'off'}"
            f"{' (' + ocr['reads'] + ')' if ocr['available'] else ' - ' + ocr.get('hint', '')}"
        )
        typer.echo(_ingest_line(report["ingest"]))
        for source in report["ingest"]["by_source"]:
            typer.echo(_source_line(source))
        for problem in filter(None, (index.get("error"), llm.get("error"))):
            typer.echo(f"  {problem}")
    raise typer.Exit(EXIT_OK if report["index"]["healthy"] else EXIT_FAILED)


def _counts_by_root(settings: Settings) -> dict[str, dict[str, int]]:
    """{root: {"documents", "chunks"}} of the index, or {} when it cannot be read (the
    index line says why)."""
    from assistant.index import open_index
    from assistant.index.stats import index_stats

    try:
        rows = index_stats(open_index(settings))["by_root"]
    except TaimatsuError:
        return {}
    return {row["root"]: {"documents": row["documents"], "chunks": row["chunks"]} for row in rows}


def _source_line(source: dict[str, Any]) -> str:
    line = f"  {source['source']}: {source['documents']} documents, {source['chunks']} chunks"
    run = source["last_run"]
    if run is None:
        return line + "; no run recorded"
    when = datetime.fromtimestamp(run.get("finished") or 0).astimezone()
    line += f"; last run {when:%Y-%m-%d %H:%M}"
    if run.get("refused"):
        return line + f" REFUSED: {run['refused']}"
    if run.get("cancelled"):
        line += " (cancelled)"
    return line + (
        f": {run['added']} added, {run['updated']} updated, {run['unchanged']} unchanged, "
        f"{run['deleted']} deleted, {run['failed']} failed"
    )


def _ingest_line(ingest: dict[str, Any]) -> str:
    line = f"ingest: permissions from {ingest['permissions']}"
    last = ingest["last_run"]
    if last is None:
        return line + "; no run yet"
    when = datetime.fromtimestamp(last.get("finished", 0)).astimezone()
    line += f"; last run {when:%Y-%m-%d %H:%M} over {last.get('url') or last.get('root', '?')}"
    if last.get("refused"):
        return line + f" REFUSED: {last['refused']}"
    return line + f": {len(last.get('failed', []))} failed"


@app.command()
def ui(
    port: Annotated[
        int | None, typer.Option("--port", help="Port (default TAIMATSU_UI_PORT or 8501).")
    ] = None,
) -> None:
    """Serve the web page."""
    settings = Settings()
    if settings.auth_mode == "single" and not _loopback(settings.ui_address):
        raise fail(
            f"single-user mode would make everyone who reaches {settings.ui_address} an "
            "administrator; set TAIMATSU_AUTH_MODE=oidc or header to serve a network"
        )
    app_file = Path(__file__).resolve().parents[1] / "web" / "app.py"
    args = [
        sys.executable,
        "-m",
        "ui.web.serve",
        "run",
        str(app_file),
        "--server.address",
        settings.ui_address,
        "--server.port",
        str(port or settings.ui_port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
        "--client.showErrorDetails",
        "none",
    ]
    args += streamlit_args(settings)
    typer.echo(f"Taimatsu page on http://{settings.ui_address}:{port or settings.ui_port}")
    sys.stdout.flush()
    os.execv(sys.executable, args)


@app.command()
def api(
    port: Annotated[
        int | None, typer.Option("--port", help="Port (default TAIMATSU_API_PORT or 8502).")
    ] = None,
) -> None:
    """Serve the HTTP API: OpenAI-compatible chat, REST and MCP (a token per caller)."""
    from ui.api.serve import serve

    settings = Settings()
    typer.echo(f"Taimatsu API on http://{settings.api_address}:{port or settings.api_port}")
    sys.stdout.flush()
    serve(settings, port)


class BundleCommands(TyperGroup):
    """`taimatsu bundle`: the bundle package imports nothing of ours, so its errors become
    TaimatsuError here, for Commands to say in one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BundleError, OllamaSourceError) as exc:
            raise TaimatsuError(str(exc)) from None


app.add_typer(bundle_app, name="bundle", cls=BundleCommands)
app.command("eval")(eval_command)
app.add_typer(token_app, name="token")


def _loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def main() -> None:
    setup_logging()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
