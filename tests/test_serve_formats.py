"""Tests of skd_tune.serve.formats: the digits student of test_serve_artifact.py exported as state_dict,
TorchScript and ONNX, each artefact reloaded and compared with the PyTorch model; a property suite run
on every entry of the registry `FORMATS`; the errors a user can meet."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys

import numpy as np
import onnxruntime
import pytest
import torch

from skd_tune.errors import CheckpointError, UserError
from skd_tune.models import build_model
from skd_tune.serve import (
    CHECK_BATCH,
    FORMATS,
    TRACE_BATCH,
    ExportFormat,
    export_artifacts,
    format_export,
    predict_inputs,
)
from skd_tune.serve import writers as W

from .serve_helpers import digits_batch, one_thread


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """`export_artifacts` of the trained student in all formats: (checks, out_dir)."""
    exp, _, _ = trained
    out = tmp_path_factory.mktemp("artefacts") / "out"
    checks = export_artifacts(exp / "export", out, list(FORMATS))
    return checks, out


# --------------------------------------------------------------------------------------------------
# Every format of the registry


def _skip_without_extra(fmt: ExportFormat) -> None:
    missing = [m for m in fmt.modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed ({fmt.install})")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_round_trips(name, trained, reference, tmp_path):
    """Written, reloaded, run on a batch size other than the traced one; its class logits are the
    logsumexp of its subclass logits per class, and it stays within its tolerance of the PyTorch model."""
    fmt = FORMATS[name]
    _skip_without_extra(fmt)
    exp, data, _ = trained
    model, meta, logits = reference
    (check,) = export_artifacts(exp / "export", tmp_path, [name])
    assert check.format == name and check.ok and check.skipped is None, check
    assert check.path == tmp_path / fmt.file_name and check.path.is_file()
    assert check.tolerance == fmt.tolerance and 0 <= check.max_abs_diff <= fmt.tolerance
    files = json.loads((tmp_path / "meta.json").read_text())["artefacts"]["files"]
    assert files[name]["path"] == fmt.file_name and files[name]["use"] == fmt.use

    x = digits_batch(data)
    assert len(x) not in (TRACE_BATCH, CHECK_BATCH)
    sub, cls = fmt.load(check.path)(x)
    want_sub, want_cls = logits(x)
    assert sub.shape == want_sub.shape and cls.shape == want_cls.shape == (len(x), len(meta["class_names"]))
    s2c = torch.tensor(meta["subclass_to_class"])
    lse = torch.stack([torch.logsumexp(sub[:, s2c == k], 1) for k in range(cls.shape[1])], 1)
    assert torch.allclose(cls, lse, atol=1e-5)
    assert max(float((sub - want_sub).abs().max()), float((cls - want_cls).abs().max())) <= fmt.tolerance
    assert fmt.check(check.path, x, (want_sub, want_cls)) <= fmt.tolerance


def test_unknown_format_lists_the_registry(trained, tmp_path):
    exp, _, _ = trained
    listed = re.escape(", ".join(FORMATS))
    with pytest.raises(UserError, match=rf"unknown export format 'nope'; valid formats: {listed} \("):
        export_artifacts(exp / "export", tmp_path / "out", ["nope"])
    with pytest.raises(UserError, match=rf"no export format given; valid formats: {listed} \("):
        export_artifacts(exp / "export", tmp_path / "out", [" ", ""])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# All formats of one export


def test_all_formats_round_trip_within_tolerance(exported):
    checks, out = exported
    assert [c.format for c in checks] == ["state_dict", "torchscript", "onnx"]
    for c in checks:
        assert c.ok and c.skipped is None, c
        assert c.path == out / FORMATS[c.format].file_name and c.path.is_file()
        assert 0 <= c.max_abs_diff <= FORMATS[c.format].tolerance
        assert c.batch == CHECK_BATCH != TRACE_BATCH
    assert {k: f.tolerance for k, f in FORMATS.items()} == {"state_dict": 1e-4, "torchscript": 1e-4, "onnx": 1e-3}
    table = format_export(checks)
    for c in checks:
        assert re.search(rf"^{c.format}\s+{re.escape(str(c.path))}\s+\d\.\d\de[-+]\d\d", table, re.M), table
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.onnx", "model.pt", "model.torchscript.pt"]


def test_state_dict_loads_with_weights_only(exported, trained, reference):
    _, out = exported
    _, data, _ = trained
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((out / "meta.json").read_text())
    model = build_model(
        meta["model"],
        meta["num_subclasses"],
        tuple(meta["input_shape"]),
        meta["normalisation"]["mean"],
        meta["normalisation"]["std"],
    )
    model.load_state_dict(state)
    x = digits_batch(data)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference[2](x)[0], atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_and_onnx_reloaded_on_another_batch_size(exported, trained, reference):
    _, out = exported
    _, data, _ = trained
    x = digits_batch(data)
    want_sub, want_cls = reference[2](x)
    assert len(x) not in (TRACE_BATCH, CHECK_BATCH)

    scripted = torch.jit.load(str(out / "model.torchscript.pt"), map_location="cpu")
    with torch.no_grad():
        sub, cls = scripted(x)
    assert (sub - want_sub).abs().max() <= 1e-4 and (cls - want_cls).abs().max() <= 1e-4

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and isinstance(inp.shape[0], str) and inp.shape[1:] == [1, 8, 8]
    assert [o.name for o in session.get_outputs()] == ["subclass_logits", "class_logits"]
    sub, cls = session.run(None, {"input": x.numpy()})
    assert sub.shape == (7, 10) and cls.shape == (7, 2)
    assert np.abs(sub - want_sub.numpy()).max() <= 1e-3 and np.abs(cls - want_cls.numpy()).max() <= 1e-3
    # softmax(class logits) sums each class's subclass probabilities
    p_sub = torch.softmax(torch.from_numpy(sub), 1)
    assert torch.allclose(
        torch.softmax(torch.from_numpy(cls), 1), torch.stack([p_sub[:, :5].sum(1), p_sub[:, 5:].sum(1)], 1), atol=1e-5
    )


def test_meta_json_describes_the_interface(exported, trained):
    checks, out = exported
    exp, data, _ = trained
    meta = json.loads((out / "meta.json").read_text())
    source = json.loads((exp / "export" / "meta.json").read_text())
    assert {k: meta[k] for k in source} == source  # everything of the source kept
    art = meta["artefacts"]
    assert art["input"]["name"] == "input" and art["input"]["dtype"] == "float32"
    assert art["input"]["shape"] == ["N", 1, 8, 8] and art["input"]["input_scale"] == data.scale
    assert "[0, 1]" in art["input"]["scale"]
    assert [(o["name"], o["shape"]) for o in art["outputs"]] == [
        ("subclass_logits", ["N", 10]),
        ("class_logits", ["N", 2]),
    ]
    assert art["outputs"][1]["labels"] == ["0-4", "5-9"] and "logsumexp" in art["outputs"][1]["definition"]
    assert set(art["files"]) == set(FORMATS)
    for c in checks:
        entry = art["files"][c.format]
        assert entry["path"] == FORMATS[c.format].file_name and entry["max_abs_diff"] == c.max_abs_diff
        assert entry["tolerance"] == FORMATS[c.format].tolerance
    assert "dynamo=True" in art["files"]["onnx"]["made_with"]


def test_onnx_skipped_when_onnxruntime_is_missing(trained, tmp_path, monkeypatch):
    exp, _, _ = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"stale")

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ModuleNotFoundError
    checks = export_artifacts(exp / "export", out, ["state_dict", "onnx"])
    assert [c.format for c in checks] == ["state_dict", "onnx"]
    assert checks[0].ok
    onnx = checks[1]
    assert onnx.path is None and onnx.max_abs_diff is None and not onnx.ok
    assert "onnxruntime is not installed" in onnx.skipped and "pip install 'skd-tune[onnx]'" in onnx.skipped
    assert not (out / "model.onnx").exists()  # a stale artefact would not match meta.json
    assert re.search(
        r"^onnx\s+-\s+skipped: onnxruntime is not installed; pip install 'skd-tune\[onnx\]'$",
        format_export(checks),
        re.M,
    )
    meta = json.loads((out / "meta.json").read_text())
    assert "pip install" in meta["artefacts"]["files"]["onnx"]["skipped"]


def test_onnx_falls_back_to_the_legacy_exporter(trained, tmp_path, monkeypatch, reference):
    exp, data, _ = trained

    def dynamo_fails(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("simulated failure of the torch.export-based exporter")

    monkeypatch.setattr(W, "_onnx_dynamo", dynamo_fails)
    (check,) = export_artifacts(exp / "export", tmp_path, ["onnx"])
    assert check.ok and "legacy" in check.detail and "simulated failure" in check.detail
    session = onnxruntime.InferenceSession(str(check.path), providers=["CPUExecutionProvider"])
    x = digits_batch(data, 5)
    sub, cls = session.run(None, {"input": x.numpy()})
    assert np.abs(cls - reference[2](x)[1].numpy()).max() <= 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "model.onnx"]  # no temporary file left


def test_an_artefact_beyond_tolerance_is_an_error(trained, tmp_path, monkeypatch):
    exp, _, _ = trained
    # no difference can pass
    monkeypatch.setitem(FORMATS, "torchscript", dataclasses.replace(FORMATS["torchscript"], tolerance=-1.0))
    with pytest.raises(
        CheckpointError, match=r"model\.torchscript\.pt: the reloaded torchscript artefact differs .*tolerance -1"
    ):
        export_artifacts(exp / "export", tmp_path, ["torchscript"])
    assert not (tmp_path / "model.torchscript.pt").exists()


def test_unknown_format_lists_the_valid_ones(trained, tmp_path):
    exp, _, _ = trained
    with pytest.raises(
        UserError, match=r"unknown export format 'tflite'; valid formats: state_dict, torchscript, onnx"
    ):
        export_artifacts(exp / "export", tmp_path / "out", ["state_dict", "tflite"])
    assert not (tmp_path / "out").exists()


def test_nothing_exported_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: neither an skd-tune experiment .* nor an export directory"):
        export_artifacts(tmp_path / "empty", tmp_path / "out", ["state_dict"])
    with pytest.raises(UserError, match=r"no such directory"):
        predict_inputs(tmp_path / "nowhere", ["a.png"])
