"""Tests of skd_tune.serve.artifact: a real student trained on scikit-learn's digits and exported by
`export_student` (model.pt + meta.json; tests/serve_helpers.py), reloaded with no pickled code, and the
checks of an export directory."""

from __future__ import annotations

import pytest
import torch

from skd_tune.errors import CheckpointError, UserError
from skd_tune.serve import check_export_dir, evaluate_exported, is_export_dir, load_student

from .serve_helpers import one_thread


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def test_the_student_learned(trained, reference):
    _, data, _ = trained
    model, meta, _ = reference
    metrics = evaluate_exported(model, meta, data.test.x, data.classes("test"))
    assert metrics["accuracy"] > 0.9


def test_export_student_writes_two_files_atomically(trained):
    exp, _, _ = trained
    export = exp / "export"
    assert sorted(p.name for p in export.iterdir()) == ["meta.json", "model.pt"]  # no temporary file left
    assert is_export_dir(export) and not is_export_dir(exp)
    state = torch.load(export / "model.pt", map_location="cpu", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_load_student_refuses_pickled_code(trained, tmp_path):
    exp, _, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text((exp / "export" / "meta.json").read_text())
    torch.save({"weights": _NotATensor()}, bad / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt: holds pickled objects .*weights_only=True"):
        load_student(bad)


class _NotATensor:
    """Pickled by reference: torch.load(weights_only=True) must refuse it."""


def test_check_export_dir_says_what_is_missing(trained, tmp_path):
    exp, _, _ = trained
    assert check_export_dir(exp / "export") == exp / "export"
    assert check_export_dir(str(exp / "export")) == exp / "export"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: neither an skd-tune experiment .* nor an export directory"):
        check_export_dir(tmp_path / "empty")
    with pytest.raises(UserError, match=r"no such directory"):
        check_export_dir(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"file: is a file, not a directory"):
        check_export_dir(tmp_path / "file")
    half = tmp_path / "half"
    half.mkdir()
    (half / "meta.json").write_text((exp / "export" / "meta.json").read_text())
    with pytest.raises(CheckpointError, match=r"half/model\.pt: file missing; this export directory has meta\.json"):
        check_export_dir(half)


@pytest.mark.parametrize("model_name,width", [("mlp_tiny", 2.0), ("cnn_small", 0.5)])
def test_a_student_of_another_width_loads_back_with_the_same_outputs(trained, tmp_path, model_name, width):
    import json

    from skd_tune.models import build_model
    from skd_tune.serve import export_student
    from skd_tune.train import make_optimizer, save_state

    _, data, spec = trained
    student = spec.student_for({"model": model_name, "width": width})
    torch.manual_seed(1)
    model = build_model(student.model, data.num_outputs, data.input_shape, data.mean, data.std, width=width).eval()
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    save_state(checkpoint, model, make_optimizer(model, 1e-3, 0.0), 1, None)
    export = export_student(
        tmp_path / "export", spec, data, checkpoint, params={"model": model_name, "width": width}, metrics={}
    )
    meta = json.loads((export / "meta.json").read_text())
    assert (meta["model"], meta["width"]) == (model_name, width)
    loaded, _ = load_student(export)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    x = torch.from_numpy(data.test.x[:5]).float() * data.scale
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_an_export_without_a_width_is_width_1(trained, tmp_path):
    import json
    import shutil

    exp, _, _ = trained
    old = tmp_path / "old"
    shutil.copytree(exp / "export", old)
    meta = json.loads((old / "meta.json").read_text())
    assert meta.pop("width") == 1.0
    (old / "meta.json").write_text(json.dumps(meta))  # as written before student.width existed
    model, _ = load_student(old)
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)][0] == 16  # mlp_tiny
