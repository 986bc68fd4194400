"""The report's content blocks and how they are written: `summary.md`, `index.html` and the CLI text.

A section is a title and a list of blocks: a sentence (str), a `Table` or an `Image` (a PNG by key).
Markdown and HTML walk the same sections (`_walk`), each with its own way of writing a block.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..methods import format_method_table, method_comparisons
from .load import Loaded

__all__ = [
    "Image",
    "Report",
    "Section",
    "Table",
    "epochs_cell",
    "fmt",
    "fmt_metric",
    "is_num",
    "mean_std",
    "progress_line",
    "to_html",
    "to_markdown",
    "to_text",
]


@dataclass
class Report:
    """What `build_report` wrote: the HTML page, the markdown summary, the CLI text and each PNG by name."""

    html: Path
    summary: Path
    text: str
    plots: dict[str, Path] = field(default_factory=dict)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    key: str
    caption: str


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[str | Table | Image] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Formatting cells


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def fmt(v: Any) -> str:
    """A parameter value: 4 significant digits for floats, '-' for missing."""
    if v is None or (is_num(v) and math.isnan(float(v))) or v is pd.NA:
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def fmt_metric(v: Any) -> str:
    """A metric value with 4 decimals, '-' for missing."""
    if v is None or v is pd.NA or not is_num(v) or math.isnan(float(v)):
        return "-"
    return f"{float(v):.4f}"


def mean_std(mean: float, std: float) -> str:
    """`0.9123 ± 0.0045`, just the mean for one run, '-' for none (as methods.format_method_table)."""
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def epochs_cell(row: dict[str, Any]) -> str:
    """`5/20` (epochs trained / epochs allowed) or `5` when the budget is not recorded."""
    done, budget = row.get("epochs"), row.get("max_epochs")
    if not is_num(done):
        return "-"
    if is_num(budget) and not math.isnan(float(budget)):
        return f"{int(done)}/{int(budget)}"
    return str(int(done))


def progress_line(ld: Loaded, pending: bool) -> str:
    """`2/10 terminated, 2 running, 6 pending, 0 errored` (without the pending count in the CLI text)."""
    c = ld.counts()
    middle = f"{c['PENDING']} pending, " if pending else ""
    return f"{c['TERMINATED']}/{ld.search.num_samples} terminated, {c['RUNNING']} running, {middle}{c['ERROR']} errored"


# --------------------------------------------------------------------------------------------------
# Markdown and HTML


class _Writer(Protocol):
    """How one format writes the parts of a section; `_walk` puts them in order."""

    def open(self, sec: Section) -> list[str]: ...
    def close(self, sec: Section) -> list[str]: ...
    def text(self, text: str) -> list[str]: ...
    def table(self, table: Table) -> list[str]: ...
    def image(self, image: Image, name: str) -> list[str]: ...


def _walk(sections: list[Section], plots: dict[str, Path], writer: _Writer) -> list[str]:
    out: list[str] = []
    for sec in sections:
        out += writer.open(sec)
        for block in sec.blocks:
            if isinstance(block, Table):
                out += writer.table(block)
            elif isinstance(block, Image):
                out += writer.image(block, plots[block.key].name)
            else:
                out += writer.text(block)
        out += writer.close(sec)
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class _Markdown:
    def open(self, sec: Section) -> list[str]:
        return [f"## {sec.title}", ""]

    def close(self, sec: Section) -> list[str]:
        return []

    def text(self, text: str) -> list[str]:
        return [text, ""]

    def table(self, table: Table) -> list[str]:
        head = [
            "| " + " | ".join(_md_cell(h) for h in table.header) + " |",
            "|" + "|".join("---" for _ in table.header) + "|",
        ]
        return head + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows] + [""]

    def image(self, image: Image, name: str) -> list[str]:
        return [f"![{image.caption}]({name})", ""]


def to_markdown(ld: Loaded, sections: list[Section], plots: dict[str, Path], generated: str) -> str:
    """summary.md: every section, tables as markdown tables, plots as links to the PNGs."""
    out = [f"# skd-tune report: {ld.spec.name}", "", f"Experiment {ld.exp.location}, generated {generated}.", ""]
    return "\n".join(out + _walk(sections, plots, _Markdown()))


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
       border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
p.meta { color: #666; margin-top: 0; } nav a { margin-right: 0.8rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child, td.w { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { display: inline-block; margin: 0.5rem 1rem 0.5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #666; font-size: 0.85rem; }
"""


def _td_class(cell: str) -> str:
    """Numbers align right (the default in the CSS), words left."""
    return "" if re.fullmatch(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?( ± [0-9.]+)?|-|[0-9]+/[0-9]+", cell) else ' class="w"'


class _Html:
    def open(self, sec: Section) -> list[str]:
        return [f'<section id="{html.escape(sec.anchor)}">', f"<h2>{html.escape(sec.title)}</h2>"]

    def close(self, sec: Section) -> list[str]:
        return ["</section>"]

    def text(self, text: str) -> list[str]:
        return [f"<p>{html.escape(text)}</p>"]

    def table(self, table: Table) -> list[str]:
        e = html.escape
        out = ["<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in table.header) + "</tr></thead><tbody>"]
        out += ["<tr>" + "".join(f"<td{_td_class(c)}>{e(c)}</td>" for c in row) + "</tr>" for row in table.rows]
        return out + ["</tbody></table>"]

    def image(self, image: Image, name: str) -> list[str]:
        e = html.escape
        caption = e(image.caption)
        return [f'<figure><img src="{e(name)}" alt="{caption}"><figcaption>{caption}</figcaption></figure>']


def to_html(ld: Loaded, sections: list[Section], plots: dict[str, Path], generated: str) -> str:
    """index.html: inline CSS, no scripts, no external URLs; the PNGs by relative src."""
    e = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>skd-tune report: {e(ld.spec.name)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>skd-tune report: {e(ld.spec.name)}</h1>",
        f'<p class="meta">experiment {e(ld.exp.location)}, generated {e(generated)}</p>',
        "<nav>" + "".join(f'<a href="#{e(s.anchor)}">{e(s.title.split(":")[0])}</a>' for s in sections) + "</nav>",
    ]
    return "\n".join(out + _walk(sections, plots, _Html()) + ["</body>", "</html>", ""])


# --------------------------------------------------------------------------------------------------
# The CLI text


def to_text(ld: Loaded, table: pd.DataFrame | None, missing: str, board: Table | str) -> str:
    """What the CLI prints: progress, the method table (or `missing`, why there is none) and the
    leaderboard `board` (or the sentence why there is none)."""
    lines = [
        f"experiment {ld.spec.name} at {ld.exp.location}: stages done: {', '.join(ld.stages_done()) or 'none'}; "
        f"student trials {progress_line(ld, pending=False)}",
        "",
    ]
    if table is None:
        lines.append(missing)
    else:
        pairs = method_comparisons(ld.method_runs)
        lines += ["method table (test split, mean ± std over paired seeds):", format_method_table(table, pairs)]
    lines.append("")
    if isinstance(board, str):
        lines.append(board)
        return "\n".join(lines)
    lines.append(f"top {len(board.rows)} student trials by {ld.metric} ({ld.mode}):")
    params = board.header[6:]
    grid = [["rank", "trial", ld.metric, "epochs", "status", "params"]]
    for row in board.rows:
        grid.append(row[:4] + [row[5], ", ".join(f"{p}={v}" for p, v in zip(params, row[6:]))])
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in grid]
    return "\n".join(lines)
