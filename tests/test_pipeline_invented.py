"""Invented subclasses end to end (Müller, Kornblith & Hinton 2020): `skd-tune run` with
`data.subclasses: invented`, a small teacher search over the auxiliary loss's beta, then the student
search distilling the invented subclass probabilities exactly as it would known ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from skd_tune.spec import load_spec

from .conftest import REPO, TINY_SPEC, deep_update, run_cli, run_spec

pytestmark = pytest.mark.slow

INVENTED = deep_update(
    TINY_SPEC,
    {
        "name": "inv",
        "data": {"subclasses": "invented", "subclasses_per_class": 4},
        "teacher": {"model": "mlp", "epochs": 6, "batch_size": 64},
        "search": {"num_samples": 3, "teacher": {"num_samples": 2, "space": {"beta": {"uniform": [0.5, 2.0]}}}},
    },
)


@pytest.fixture(scope="module")
def invented_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("inv")
    exp, proc = run_spec(cwd, INVENTED)
    return cwd, exp, proc


def test_teacher_search_over_beta_and_diagnostics(invented_run):
    _, exp, proc = invented_run
    teacher = pd.read_parquet(exp / "results" / "teacher_trials.parquet")
    assert len(teacher) == 2 and teacher["beta"].between(0.5, 2.0).all() and (teacher["status"] == "TERMINATED").all()
    epochs = pd.read_parquet(exp / "results" / "teacher_epochs.parquet")
    assert epochs["train_aux"].notna().all() and (epochs["train_aux"] <= 0).all()
    state = json.loads((exp / "state.json").read_text())
    best = teacher.loc[teacher["best_val_f1"].idxmax()]
    assert state["stages"]["teacher"]["params"]["beta"] == pytest.approx(best["beta"])
    # 4 invented subclasses per class: the cached logits have 8 outputs
    assert np.load(exp / "teacher_logits" / "train.npy").shape[1] == 8
    diag = json.loads((exp / "results" / "subclasses.json").read_text())
    assert diag["scheme"] == "invented" and diag["output_names"][:2] == ["0-4/1", "0-4/2"]
    for row in diag["per_class"]:  # beta > 0: more than one subclass in use in every class
        assert sum(n > 0 for n in row["counts"]) > 1 and row["max_entropy_bits"] == pytest.approx(2.0)
    assert diag["ami_test"] > 0.2  # the invented subclasses match the true digits better than chance
    assert (
        "the teacher invents 4 subclasses per class" in proc.stdout and "AMI with the known subclasses" in proc.stdout
    )


def test_student_distils_invented_subclasses(invented_run):
    _, exp, proc = invented_run
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all()
    epochs = pd.read_parquet(exp / "results" / "epochs.parquet")
    assert (epochs["train_skd"] > 0).any()  # the SKD term on the 8 invented subclasses was trained
    meta = json.loads((exp / "export" / "meta.json").read_text())
    assert meta["num_subclasses"] == 8 and meta["subclass_names"][-1] == "5-9/4"
    assert meta["subclass_to_class"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert meta["metrics"]["test"]["f1"] > 0.8


def test_shipped_invented_spec_is_the_documented_one():
    spec = load_spec(REPO / "search_spaces" / "digits-invented.yaml")
    assert spec.data.invented and spec.data.subclasses_per_class == 5 and spec.teacher.beta > 0


def test_known_subclasses_split_into_several_outputs(tmp_path):
    """`outputs_per_subclass: 2`: each digit gets two teacher outputs (trained on the digit labels plus
    the auxiliary loss); the students distil all 20 of them. (Optuna's random sampler, here.)"""
    spec = deep_update(
        TINY_SPEC,
        {
            "name": "split",
            "data": {"outputs_per_subclass": 2},
            "teacher": {"epochs": 2},
            "student": {"epochs": 2},
            "search": {"num_samples": 2, "sampler": "random", "scheduler": {"name": "fifo"}},
        },
    )
    spec_path = tmp_path / "split.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    proc = run_cli("run", str(spec_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / "runs" / "split"
    assert np.load(exp / "teacher_logits" / "test.npy").shape[1] == 20
    diag = json.loads((exp / "results" / "subclasses.json").read_text())
    assert diag["scheme"] == "known, split" and diag["output_names"][:3] == ["0/1", "0/2", "1/1"]
    assert "2 teacher outputs per subclass" in proc.stdout
    meta = json.loads((exp / "export" / "meta.json").read_text())
    assert meta["num_subclasses"] == 20 and meta["subclass_to_class"] == [0] * 10 + [1] * 10
