"""Evaluation results for people: a terminal table and a self-contained HTML report.

Rows are the JSON form of `SettingScores` (`as_json()`), so a benchmark can add rows of
its own (a plain llama-index setup, a setting that could not be measured: metrics None
and a `note`). The HTML file needs nothing from the network: inline CSS and an inline
SVG bar chart comparing the settings, no script.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

METRICS = [
    ("hit1", "hit@1"),
    ("hit5", "hit@5"),
    ("hit10", "hit@10"),
    ("mrr10", "MRR@10"),
    ("ndcg10", "nDCG@10"),
]
EXTRAS = [
    ("passage_hit5", "passage hit@5"),
    ("passage_mrr10", "passage MRR@10"),
    ("answerable_let_through", "answered"),
    ("unanswerable_refused", "unans. refused"),
    ("ms_per_query", "ms/query"),
    ("chunks", "chunks"),
    ("ingest_seconds", "ingest s"),
    ("citation_precision", "cit. precision"),
    ("faithfulness", "faithfulness"),
    ("answer_seconds_mean", "answer s"),
]
COLOURS = ["#9ecae1", "#4292c6", "#08519c", "#fd8d3c", "#31a354"]

Row = dict[str, Any]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1.0 else f"{value:.1f}"
    return str(value)


def _columns(rows: Sequence[Row]) -> list[tuple[str, str]]:
    extras = [(k, label) for k, label in EXTRAS if any(r.get(k) is not None for r in rows)]
    return [("name", "setting"), ("questions", "n"), *METRICS, *extras]


def table(rows: Sequence[Row], title: str | None = None) -> str:
    """A plain-text table, one row per setting; notes printed under it."""
    columns = _columns(rows)
    cells = [[label for _, label in columns]]
    cells += [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]

    def fmt(line: list[str]) -> str:
        first = line[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))])

    out = [title] if title else []
    out += [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in cells[1:]]
    out += [f"  {row['name']}: {row['note']}" for row in rows if row.get("note")]
    return "\n".join(out)


def bar_chart(rows: Sequence[Row], width: int = 760) -> str:
    """Grouped bars: for each measured setting, its five retrieval metrics (0-1)."""
    measured = [r for r in rows if r.get("hit10") is not None]
    group_h, bar_h, left, top = len(METRICS) * 11 + 14, 10, 190, 30
    height = top + group_h * len(measured) + 30
    scale = width - left - 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="retrieval scores per setting" font-family="sans-serif" '
        f'font-size="11">'
    ]
    for i, (_, label) in enumerate(METRICS):  # legend
        x = left + i * 105
        parts.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{COLOURS[i]}"/>')
        parts.append(f'<text x="{x + 16}" y="16">{label}</text>')
    for g, row in enumerate(measured):
        y0 = top + g * group_h
        name = html.escape(str(row["name"]))
        parts.append(f'<text x="{left - 8}" y="{y0 + group_h / 2}" text-anchor="end">{name}</text>')
        for i, (key, label) in enumerate(METRICS):
            value = float(row.get(key) or 0.0)
            y = y0 + i * 11
            parts.append(
                f'<rect x="{left}" y="{y}" width="{value * scale:.1f}" height="{bar_h}" '
                f'fill="{COLOURS[i]}"><title>{name} {label} {value:.3f}</title></rect>'
            )
            parts.append(f'<text x="{left + value * scale + 4:.1f}" y="{y + 9}">{value:.2f}</text>')
    axis_y = top + group_h * len(measured) + 4
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#ccc" '
            'stroke-width="0.5"/>'
        )
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{tick:g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(rows: Sequence[Row]) -> str:
    columns = _columns(rows)
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(k)))}</td>" for k, _ in columns) + "</tr>"
        for row in rows
    )
    notes = "".join(
        f"<li><b>{html.escape(str(r['name']))}</b>: {html.escape(str(r['note']))}</li>"
        for r in rows
        if r.get("note")
    )
    return f"<table><tr>{head}</tr>{body}</table>" + (f"<ul>{notes}</ul>" if notes else "")


def html_report(sections: Sequence[tuple[str, Sequence[Row]]], title: str, notes: str = "") -> str:
    """One page: per section (a gold set), the chart and the table of its settings."""
    blocks = [
        f"<h2>{html.escape(name)}</h2>\n{bar_chart(rows)}\n{_html_table(rows)}"
        for name, rows in sections
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<p>{html.escape(notes)}</p>" if notes else "")
        + "\n".join(blocks)
        + "</body></html>\n"
    )
