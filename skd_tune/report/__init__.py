"""`skd-tune report`: one experiment as `index.html`, `summary.md` and PNG plots in its report directory.

What the report shows, section by section (each one says so in a sentence when its input is not
there yet, so the report works while a search runs, or before anything ran):

- progress: stages done and student trials by status;
- the method table (no-KD, KD, SKD on the test split, mean ± std over seeds, plus the teacher), the
  F1 gains SKD − KD and SKD − no-KD, and a bar chart of the test F1 with std error bars;
- the teacher (validation metrics at its best epoch, test metrics) and the exported best student;
- the leaderboard of the top student trials with their parameters, the learning curves of those
  trials, and the optimisation history (each trial's best value in the order the trials started, with
  the running best);
- with `search.objectives`, the Pareto front: its table, and the first objective against each other
  one (dominated trials grey, the front joined by a step line, the best by the first objective starred);
- the search metric against each searched parameter (scatter for numeric ones, log x for loguniform
  ones; box plots for choices such as `curriculum.pacing`);
- fANOVA parameter importances (Optuna's evaluator on an in-memory study of the finished trials);
- the data: label bits H(S|C) of the training set, subclass counts, and the usage of invented
  subclasses when the teacher invented them.

Modules: `load` (what the report reads, through `skd_tune.experiment` only), `sections`,
`sections_search` and `sections_pareto` (the content), `plots` (matplotlib), `render` (markdown, HTML,
the CLI text). Nothing here imports Ray; every output file is written atomically, so a browser never
sees half a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..atomic import make_dir, write_text_atomic
from ..errors import UserError
from ..experiment import Experiment
from .load import load
from .plots import Plots
from .render import Report, to_html, to_markdown, to_text
from .sections import (
    curves_section,
    export_section,
    leaderboard,
    leaderboard_section,
    methods_missing,
    methods_section,
    progress_section,
    run_methods_table,
    teacher_section,
)
from .sections_pareto import pareto_section
from .sections_search import data_section, importance_section, params_section

__all__ = ["Report", "build_report"]


def build_report(
    experiment: Experiment | str | os.PathLike, out_dir: str | os.PathLike | None = None, top: int = 10
) -> Report:
    """Write the report of `experiment` (an `Experiment`, or the path of one) into `out_dir` (default:
    the experiment's report directory).

    Writes one PNG per plot, then `summary.md`, then `index.html` (each atomically), and returns their
    paths with the text the CLI prints. Works at any stage of a run. Raises NotAnExperiment when
    `experiment` is not an experiment and ResultsError when one of its results files is damaged; both
    with a one-paragraph message naming the file and the fix.
    """
    if top < 1:
        raise UserError(f"top: the leaderboard needs at least 1 trial, got {top}; e.g. --top 10")
    ld = load(experiment)
    out = Path(out_dir) if out_dir is not None else ld.exp.report_dir
    _prepare_out_dir(out)
    plots = Plots(out)
    table = run_methods_table(ld)
    board = leaderboard(ld, top)
    sections = [
        progress_section(ld),
        methods_section(ld, table, plots),
        teacher_section(ld),
        export_section(ld),
        leaderboard_section(ld, board, top),
        *([pareto_section(ld, plots)] if ld.search.objectives else []),
        curves_section(ld, top, plots),
        params_section(ld, plots),
        importance_section(ld, plots),
        data_section(ld, plots),
    ]
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    summary, page = out / "summary.md", out / "index.html"
    write_text_atomic(summary, to_markdown(ld, sections, plots.paths, generated))
    write_text_atomic(page, to_html(ld, sections, plots.paths, generated))
    text = to_text(ld, table, methods_missing(ld), board)
    return Report(html=page, summary=summary, text=text, plots=dict(plots.paths))


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the output directory, or say in one paragraph why it cannot be."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(
            f"{out_dir}: is a file, not a directory; give --out a directory for the report (it is created if missing)"
        )
    make_dir(out_dir, UserError, "give --out a writable directory for the report")
