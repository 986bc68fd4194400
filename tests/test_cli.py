"""The command line's exit codes and messages: 0 on success, 2 with one paragraph (no traceback) for
bad input, naming the file or field and the fix. The runs themselves are in test_pipeline*.py."""

from __future__ import annotations

import re

import pytest

from skd_tune.cli import main
from skd_tune.experiment import Experiment, location_of, prepare
from skd_tune.spec import validate_spec

from .conftest import TINY_SPEC, deep_update


@pytest.fixture
def unfinished(tmp_path):
    """An experiment whose teacher stage is done and nothing else."""
    spec = validate_spec(deep_update(TINY_SPEC, {"storage": str(tmp_path / "runs")}))
    exp = Experiment.open(location_of(spec))
    prepare(exp, spec)
    exp.mark_done("teacher", checkpoint="teacher/x", metrics={"val_f1": 0.9})
    return exp


def _one_paragraph(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["status", "{tmp}/nowhere"], r"nowhere: no such directory\. Give the directory of an experiment"),
        (["status", "{tmp}"], r"not an skd-tune experiment \(it has no spec\.yaml\)"),
        (["report", "{tmp}/nowhere"], r"nowhere: no such directory"),
        (["export", "{tmp}/nowhere", "--out", "{tmp}/o"], r"nowhere: no such directory; give an experiment directory"),
        (["predict", "{tmp}", "x.png"], r"neither an skd-tune experiment .* nor an export directory"),
        (["run", "{tmp}/nowhere.yaml"], r"nowhere\.yaml: 1 problem in the spec: file not found"),
    ],
    ids=["status-missing", "status-not-experiment", "report-missing", "export-missing", "predict-bad", "run-missing"],
)
def test_bad_paths_exit_2_with_one_paragraph(tmp_path, capsys, argv, pattern):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert re.search(pattern, _one_paragraph(capsys))


def test_export_of_an_experiment_whose_export_stage_has_not_run(unfinished, tmp_path, capsys):
    assert main(["export", str(unfinished.root), "--out", str(tmp_path / "o")]) == 2
    err = _one_paragraph(capsys)
    assert "export stage has not run; run `skd-tune run" in err and "to finish the experiment" in err


def test_status_of_an_unfinished_experiment_exits_0(unfinished, capsys):
    assert main(["status", str(unfinished.root)]) == 0
    out = capsys.readouterr().out
    assert "stages: teacher done, teacher_logits -" in out and "not finished; resume with" in out


def test_usage_errors_are_argparse_s_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["run"])
    assert info.value.code == 2
