"""A student trial exported: the search's best (the pipeline's export stage), or one the user chooses
(`skd-tune export EXPERIMENT --trial ID | --pick 'params<=20000'`, experiment/selection.py).

`export_trial` writes the trial's best-epoch weights as an export directory (`model.pt` + `meta.json`),
loads it back as a user would and records its test metrics, measured on the loaded model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..data import Dataset
    from ..experiment import Experiment
    from ..spec import Spec
    from .formats import ArtifactCheck

__all__ = ["export_chosen", "export_trial"]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def export_trial(exp: Experiment, spec: Spec, data: Dataset, trial: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Export the student of `trial` (a row of the student trials table) into `out_dir`; returns its
    params and the test metrics of the loaded-back export."""
    from .artifact import evaluate_exported, export_student, load_student, set_test_metrics

    params = {p: _plain(trial[p]) for p in spec.search.space if p in trial}
    metrics = {
        "trial_id": trial["trial_id"],
        **{k: trial[k] for k in trial if k.startswith("best_val_") or k == "best_epoch"},
    }
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = exp.local_dir(trial["checkpoint_path"], Path(scratch))
        export_student(out_dir, spec, data, checkpoint, params, metrics)
    model, meta = load_student(out_dir)  # the round trip: what a user will load
    test = evaluate_exported(model, meta, data.test.x, data.classes("test"))
    set_test_metrics(out_dir, test)
    return {"params": params, "test_metrics": test}


def export_chosen(
    source: str, out: str, formats: list[str], trial_id: str | None = None, pick: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[ArtifactCheck]]:
    """Export the student trial `trial_id`, or the best within the budget `pick`, of the experiment at
    `source` as the artefacts `formats` into `out`. Returns (the trial's row, what `export_trial`
    returned, the checks of the artefacts)."""
    from ..data import load_dataset
    from ..experiment import Experiment, frozen_spec
    from ..experiment.selection import pick_trial, select_trial
    from .formats import export_artifacts

    exp = Experiment.existing(source)
    spec = frozen_spec(exp)
    trials = exp.trials("student")
    trial = (
        select_trial(trials, trial_id) if trial_id else pick_trial(trials, pick, spec.search.metric, spec.search.mode)
    )
    data = load_dataset(spec.data, spec.seed)
    with tempfile.TemporaryDirectory() as scratch:
        exported = export_trial(exp, spec, data, trial, Path(scratch) / "export")
        checks = export_artifacts(Path(scratch) / "export", out, formats)
    return trial, exported, checks
