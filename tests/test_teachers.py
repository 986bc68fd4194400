"""Bring your own teacher (skd_tune/teachers/): clustered subclass logits keep the teacher's class
probabilities; TorchScript and state_dict teachers load as they were saved; precomputed logits that do not
fit the data are refused naming the file; rebuilt logits reuse the cached clusters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from skd_tune.data import DataError, class_view, load_dataset
from skd_tune.experiment import Experiment
from skd_tune.spec import validate_spec
from skd_tune.stages import Context
from skd_tune.stages.teacher import TeacherStage
from skd_tune.stages.teacher_logits import TeacherLogitsStage
from skd_tune.teachers import check_order, export_order, fit_clusters, load_teacher, subclass_logits

from .conftest import REPO, TINY_SPEC, deep_update, run_cli, run_spec

K = 3
CLUSTERED = {"data": {"subclasses": "clustered", "subclasses_per_class": K}, "teacher": {"model": "mlp_tiny"}}


def _spec(**teacher):
    return validate_spec(deep_update(TINY_SPEC, deep_update(CLUSTERED, {"teacher": teacher})))


@pytest.fixture(scope="module")
def digits():
    spec = _spec()
    return load_dataset(spec.data, spec.seed)


def test_subclass_logits_keep_the_class_probabilities():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 5, (300, 3))
    emb = rng.normal(0, 1, (300, 8)) + np.repeat(rng.normal(0, 4, (6, 8)), 50, axis=0)
    classes = np.repeat(np.arange(3), 100)
    clusters = fit_clusters(emb, classes, 3, 4, seed=0)
    sub = torch.from_numpy(subclass_logits(z, emb, clusters)).double()
    assert sub.shape == (300, 12) and clusters.tau > 0
    kept = torch.logsumexp(sub.reshape(300, 3, 4), dim=2)
    np.testing.assert_allclose(torch.softmax(kept, 1), torch.softmax(torch.from_numpy(z), 1), atol=1e-6)
    np.testing.assert_allclose(kept, z, atol=1e-5)
    # within a class, the subclass probabilities are not uniform: the clusters carry information
    assert torch.softmax(sub[:, :4], 1).max(1).values.mean() > 0.5


_SAVE = """
import sys, numpy as np, torch
from skd_tune.data import class_view, load_dataset
from skd_tune.models import build_model
from skd_tune.spec import validate_spec
from skd_tune.teachers.checkpoint import save_teacher
from tests.conftest import TINY_SPEC, deep_update
spec = validate_spec(deep_update(TINY_SPEC, {"data": {"subclasses": "clustered", "subclasses_per_class": 3}}))
data = class_view(load_dataset(spec.data, spec.seed))
torch.manual_seed(1)
model = build_model("mlp_tiny", data.num_outputs, data.input_shape, data.mean, data.std).eval()
for fmt in ("state_dict", "torchscript"):
    save_teacher(model, data, sys.argv[1] + "/teacher_" + fmt + ".pt", fmt)
x = torch.as_tensor(data.test.x, dtype=torch.float32) * data.scale
np.save(sys.argv[1] + "/test_logits.npy", model(x).detach().numpy())
"""


def test_torchscript_and_state_dict_teachers_give_the_logits_they_were_saved_with(tmp_path, digits):
    subprocess.run([sys.executable, "-c", _SAVE, str(tmp_path)], cwd=REPO, check=True, capture_output=True)
    saved = np.load(tmp_path / "test_logits.npy")
    for fmt in ("state_dict", "torchscript"):
        spec = _spec(source="checkpoint", path=str(tmp_path / f"teacher_{fmt}.pt"))
        out = load_teacher(spec, digits, torch.device("cpu"))
        assert out.record["format"] == fmt and out.embeddings["train"].shape == (len(digits.train), 16)
        np.testing.assert_allclose(out.logits["test"], saved, atol=1e-5)
    wrong = _spec(source="checkpoint", path=str(tmp_path / "teacher_state_dict.pt"), model="mlp")
    with pytest.raises(
        Exception, match=r"teacher_state_dict\.pt: neither a TorchScript file nor a state_dict of teacher\.model 'mlp'"
    ):
        load_teacher(wrong, digits)


def _precomputed(directory: Path, data, seed_data=None, width: int = 2) -> None:
    """A logits directory for `data` (order.json of `seed_data`, if given), with embeddings."""
    export_order(seed_data or data, directory)
    rng = np.random.default_rng(0)
    for name in ("train", "val", "test"):
        n, classes = len(data.split(name)), data.classes(name)
        np.save(directory / f"{name}.npy", rng.normal(0, 1, (n, width)) + 3 * np.eye(width)[classes % width])
        np.save(directory / f"{name}_embeddings.npy", data.split(name).x.reshape(n, -1).astype(np.float32))


def test_precomputed_logits_that_do_not_fit_are_refused_naming_the_file(tmp_path, digits):
    spec = _spec(source="logits", path=str(tmp_path))
    _precomputed(tmp_path, digits)
    assert load_teacher(spec, digits).logits["val"].shape == (len(digits.val), 2)
    np.save(tmp_path / "val.npy", np.zeros((len(digits.val) - 1, 2)))
    with pytest.raises(
        DataError, match=rf"{tmp_path}/val\.npy: shape \(\d+, 2\), but this split has {len(digits.val)} samples"
    ):
        load_teacher(spec, digits)
    np.save(tmp_path / "val.npy", np.zeros((len(digits.val), 10)))
    with pytest.raises(
        DataError, match=rf"{tmp_path}/val\.npy: the teacher gives 10 outputs per sample, but 2 are expected"
    ):
        load_teacher(spec, digits)
    other = validate_spec(deep_update(TINY_SPEC, deep_update(CLUSTERED, {"seed": 1})))
    _precomputed(tmp_path, digits, seed_data=load_dataset(other.data, other.seed))
    with pytest.raises(
        DataError,
        match=rf"{tmp_path}/order\.json: the logits of the train, val, test split\(s\) were computed for another sample order",
    ):
        load_teacher(spec, digits)


def test_rebuilt_logits_reuse_the_cached_clusters(tmp_path, digits, monkeypatch):
    _precomputed(tmp_path / "logits", digits)
    spec = _spec(source="logits", path=str(tmp_path / "logits"))
    exp = Experiment(tmp_path / "exp")
    lines: list[str] = []
    ctx = Context(spec, exp, digits, lines.append, "", lambda: None, True)
    stages = (TeacherStage(), TeacherLogitsStage())
    assert not any(stage.needs_ray(ctx) for stage in stages)
    for stage in stages:
        exp.mark_done(stage.name, **stage.run(ctx))
    first = exp.load_teacher_logits()
    assert first["test"].shape == (len(digits.test), 2 * K) and exp.load_clusters() is not None
    assert exp.done("teacher_logits")["clusters"]["fitted"] and "ami_test" in exp.done("teacher_logits")["subclasses"]
    (exp.logits_dir / "train.npy").write_bytes(b"damaged")  # a resumed run rebuilds the logits ...
    ctx = Context(spec, exp, digits, lines.append, "", lambda: None, True)
    assert not stages[1].intact(ctx, exp.done("teacher_logits"))

    def refit(*args, **kwargs):
        raise AssertionError("the clusters were fitted again")

    monkeypatch.setattr("skd_tune.teachers.fit_clusters", refit)
    record = stages[1].run(ctx)  # ... with the cached clusters
    stages[1].show(ctx, record)
    assert not record["clusters"]["fitted"] and "(not refitted)" in "\n".join(lines)
    for name, logits in exp.load_teacher_logits().items():
        np.testing.assert_array_equal(logits, first[name])
    assert class_view(digits).num_outputs == 2


def test_export_order_command_writes_what_the_loader_checks(tmp_path, digits, capsys):
    from skd_tune.cli import main

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump(deep_update(TINY_SPEC, CLUSTERED)))
    assert main(["data", "export-order", str(spec_path), str(tmp_path / "d")]) == 0
    assert "order.json: the order of digits's train/val/test rows" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "d" / "test_x.npy"), digits.test.x)
    assert check_order(tmp_path / "d", digits)["rows"]["train"] == len(digits.train)


@pytest.mark.slow
def test_own_teacher_end_to_end(tmp_path):
    """The documented two commands: `skd-tune teacher` trains and saves a class-only teacher, `skd-tune run`
    loads it (teacher.source: checkpoint) and distils clusters of its embeddings."""
    raw = deep_update(
        TINY_SPEC,
        deep_update(
            CLUSTERED,
            {
                "name": "own",
                "teacher": {"source": "checkpoint", "path": "t.pt", "outputs": "classes", "epochs": 2},
                "student": {"epochs": 2},
                "search": {"num_samples": 1, "sampler": "random", "scheduler": {"name": "fifo"}},
            },
        ),
    )
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(raw))
    made = run_cli("teacher", "own.yaml", "--out", "t.pt", cwd=tmp_path)
    assert made.returncode == 0 and "t.pt: teacher mlp_tiny (state_dict)" in made.stdout, made.stderr
    exp, proc = run_spec(tmp_path, raw)
    assert "[teacher] loaded (checkpoint)" in proc.stdout and "clusters per class" in proc.stdout
    assert np.load(exp / "teacher_logits" / "train.npy").shape[1] == 2 * K
    diag = json.loads((exp / "results" / "subclasses.json").read_text())
    assert diag["scheme"] == "clustered" and 0 <= diag["ami_test"] <= 1
    meta = json.loads((exp / "export" / "meta.json").read_text())
    assert meta["subclasses"] == "clustered" and meta["num_subclasses"] == 2 * K
