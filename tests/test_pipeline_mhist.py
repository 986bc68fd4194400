"""The polyp pipeline end to end on a tiny synthetic MHIST: agreement subclasses, curriculum, augmentation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from skd_tune.data import load_dataset
from skd_tune.data.synth import write_synthetic_mhist
from skd_tune.serve import evaluate_exported, load_student
from skd_tune.spec import load_spec

from .conftest import REPO, deep_update, run_cli

pytestmark = pytest.mark.slow


def test_polyp_small_tiny_end_to_end(tmp_path, monkeypatch):
    write_synthetic_mhist(tmp_path / "data" / "mhist-synth", n=120, seed=0, size=32)
    raw = yaml.safe_load((REPO / "search_spaces" / "polyp-small.yaml").read_text())
    raw = deep_update(
        raw,
        {
            "name": "polyp-tiny",
            # 120 images: a quarter of the training split would leave too few of some subclass to stratify
            "data": {"image_size": 32, "train_fraction": 1.0},
            "teacher": {"model": "cnn_small", "epochs": 2, "batch_size": 32, "resources": {"cpu": 1}},
            "student": {"epochs": 3, "batch_size": 32},
            "search": {"num_samples": 3, "scheduler": {"name": "fifo"}},
            "methods": {"seeds": 2},
        },
    )
    raw["search"]["space"]["curriculum.pacing"] = {"choice": ["linear", "root", "levels"]}
    spec_path = tmp_path / "polyp-tiny.yaml"
    spec_path.write_text(yaml.safe_dump(raw))

    proc = run_cli("run", str(spec_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / "runs" / "polyp-tiny"
    summary = json.loads((exp / "results" / "data.json").read_text())
    assert summary["subclass_names"] == [
        "HP-7/7",
        "HP-6/7",
        "HP-5/7",
        "HP-4/7",
        "SSA-7/7",
        "SSA-6/7",
        "SSA-5/7",
        "SSA-4/7",
    ]
    assert summary["positive_class"] == "SSA" and summary["difficulty"] == "annotator agreement"
    assert 0 < summary["label_bits_train"] <= 2  # at most log2(4) bits with 4 subclasses per class
    assert f"H(S|C) = {summary['label_bits_train']:.3f}" in proc.stdout

    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    epochs = pd.read_parquet(exp / "results" / "epochs.parquet")
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all()
    assert set(trials["curriculum.pacing"]) <= {"linear", "root", "levels"}
    # the curriculum ran: the first epoch used a share of the training set, the last one all of it
    first = epochs[epochs["epoch"] == 1].set_index("trial_id")["train_share"]
    assert (first < 1).all()
    assert (epochs[epochs["epoch"] == 3]["train_share"] == 1).all()

    monkeypatch.chdir(tmp_path)  # data.root is relative to the working directory
    spec = load_spec(spec_path)
    data = load_dataset(spec.data, spec.seed)
    model, meta = load_student(exp / "export")
    assert meta["class_names"] == ["HP", "SSA"] and meta["input_shape"] == [3, 32, 32]
    metrics = evaluate_exported(model, meta, data.test.x, data.classes("test"))
    assert metrics == pytest.approx(meta["metrics"]["test"])


def test_invented_subclasses_on_mhist(tmp_path):
    """`subclasses: invented` on MHIST: the teacher invents 3 subclasses per class (the agreement levels
    are kept only to score them), the students distil them, and the run says how they were used."""
    write_synthetic_mhist(tmp_path / "data" / "mhist-synth", n=120, seed=0, size=32)
    raw = yaml.safe_load((REPO / "search_spaces" / "polyp-small.yaml").read_text())
    raw = deep_update(
        raw,
        {
            "name": "polyp-invented",
            "data": {"image_size": 32, "subclasses": "invented", "subclasses_per_class": 3, "train_fraction": 1.0},
            "teacher": {
                "model": "cnn_small",
                "epochs": 2,
                "batch_size": 32,
                "resources": {"cpu": 1},
                "curriculum": {"pacing": "none"},
            },
            "student": {"epochs": 2, "batch_size": 32},
            "search": {"num_samples": 2, "scheduler": {"name": "fifo"}},
            "methods": {"seeds": 0},
        },
    )
    spec_path = tmp_path / "polyp-invented.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    proc = run_cli("run", str(spec_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / "runs" / "polyp-invented"
    diag = json.loads((exp / "results" / "subclasses.json").read_text())
    assert diag["output_names"] == ["HP/1", "HP/2", "HP/3", "SSA/1", "SSA/2", "SSA/3"]
    assert [row["class"] for row in diag["per_class"]] == ["HP", "SSA"] and -1 <= diag["ami_test"] <= 1
    assert "agreement" not in diag["output_names"][0] and "HP-7/7" in diag["ami_against"]
    meta = json.loads((exp / "export" / "meta.json").read_text())
    assert meta["subclasses"] == "invented" and meta["num_subclasses"] == 6
