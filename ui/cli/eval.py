"""`taimatsu eval GOLD`: score retrieval (and answers, when a model is available) on a
gold file against the configured index.

Registered in ui/cli/main.py with `app.command("eval")(eval_command)`, whose command group
(ui/cli/common.py's Commands) says its errors in one line. Heavy imports happen inside the
command.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from assistant.errors import TaimatsuError
from ui.cli.common import fail


def eval_command(
    gold: Annotated[Path, typer.Argument(help="Gold file: JSON lines with question, sources.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML report with a chart here.")
    ] = None,
    modes: Annotated[
        str,
        typer.Option(
            "--modes",
            help="Retrieval modes to compare: the TAIMATSU_RETRIEVAL settings (by-language, "
            "hybrid, dense, keyword), rrf:D:K (weighted fusion), bylang (language alone). "
            "Answers are scored for the configured one.",
        ),
    ] = "by-language,hybrid,dense,keyword",
    answers: Annotated[
        bool | None,
        typer.Option(
            "--answers/--no-answers",
            help="Also ask each question through the answerer (default: when the Ollama "
            "model is available; faithfulness needs it).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N questions.")
    ] = None,
    groups: Annotated[
        str | None, typer.Option("--groups", help="Comma-separated groups of the asker.")
    ] = None,
) -> None:
    """Measure answer quality on a gold file: hit@1/5/10, MRR@10, nDCG@10 per retrieval
    mode; citation precision, faithfulness and latency of the answers."""
    from assistant.evaluation import check_mode, html_report, load_gold, run_eval, table
    from assistant.retrieval import Searcher
    from assistant.settings import Settings

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    try:
        for mode in chosen or [""]:
            check_mode(mode)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--modes") from None
    # one "ollama unavailable" warning per question says nothing the summary does not
    logging.getLogger("assistant.answering.llm").setLevel(logging.ERROR)
    settings = Settings()
    asker = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    try:
        items = load_gold(gold)[:limit]
        searcher = Searcher(settings)
        if not searcher.index.exists():
            raise fail(
                f"there is no index under {settings.data_dir}; run `taimatsu ingest FOLDER` "
                "on the gold file's documents first"
            )
        rows = run_eval(settings, items, chosen, asker, answers, searcher)
    except TaimatsuError:
        raise  # GoldError, StoreError...: said by the command group
    except ValueError as exc:  # not ours yet: a gold file that is not UTF-8, rrf:D:K on a server
        raise TaimatsuError(str(exc)) from None
    body = [row.as_json() for row in rows]
    if html:
        title = f"Taimatsu evaluation: {gold.name}"
        notes = f"{len(items)} questions; index {settings.data_dir}; gold {gold}"
        html.write_text(html_report([(gold.name, body)], title, notes), encoding="utf-8")
    if as_json:
        report = {
            "gold": str(gold),
            "questions": len(items),
            "settings": body,
            "details": [row.as_json(details=True)["questions_detail"] for row in rows],
        }
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
        return
    typer.echo(table(body, f"{gold.name}: {len(items)} questions"))
    product = next((r for r in body if "answer_modes" in r), None)
    if product:
        typer.echo(
            f"answers ({product.get('model') or 'no model: sources only'}): "
            f"modes {product['answer_modes']}, citation precision "
            f"{product['citation_precision']}, faithfulness {product['faithfulness']}"
        )
    if html:
        typer.echo(f"report: {html}")
