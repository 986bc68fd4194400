"""Tests of skd_tune.export: a real student trained on scikit-learn's digits, exported as state_dict,
TorchScript and ONNX, each artefact reloaded and compared with the PyTorch model; predictions for PNG,
.npy and .csv inputs; the errors a user can meet; and the CLI as a real subprocess."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from skd_tune import export as E
from skd_tune.data import load_dataset
from skd_tune.errors import CheckpointError, DataError, UserError
from skd_tune.losses import class_logits, class_membership
from skd_tune.models import build_model
from skd_tune.spec import Spec
from skd_tune.train import DeviceSplit, fit, make_optimizer, membership_for, save_state, set_threads, teacher_loss

from .conftest import TINY_SPEC, run_cli

CPU = torch.device("cpu")
EPOCHS = 12
N_IMAGES = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread (also for the CLI subprocesses, through OMP_NUM_THREADS): on a busy machine
    torch's thread pool costs more than it gains on models this small. Restored afterwards."""
    old_threads = torch.get_num_threads()
    old_env = os.environ.get("OMP_NUM_THREADS")
    set_threads(1)
    yield
    torch.set_num_threads(old_threads)
    if old_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old_env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An "experiment" directory holding only export/ (model.pt + meta.json) for a real mlp_tiny student
    trained on digits, plus the dataset and the spec."""
    spec = Spec.model_validate(TINY_SPEC)
    data = load_dataset(spec.data, spec.seed)
    torch.manual_seed(0)
    model = build_model("mlp_tiny", data.num_subclasses, data.input_shape, data.mean, data.std)

    def split(s):
        return DeviceSplit.from_numpy(s.x, s.subclass, data.subclass_to_class, data.scale, CPU)

    train, val = split(data.train), split(data.val)
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.0)
    best = None
    for m in fit(
        model,
        optimizer,
        teacher_loss(train),
        train,
        val,
        membership_for(data.subclass_to_class, CPU),
        data.positive_class,
        epochs=EPOCHS,
        batch_size=64,
        seed=0,
    ):
        if best is None or m["val_accuracy"] >= best["value"]:
            best = {
                "model": {k: v.clone() for k, v in model.state_dict().items()},
                "epoch": m["epoch"],
                "value": m["val_accuracy"],
            }
    root = tmp_path_factory.mktemp("exp")
    ckpt = root / "checkpoint"
    ckpt.mkdir()
    save_state(ckpt, model, optimizer, EPOCHS, best)
    exp = root / "experiment"
    E.export_student(exp / "export", spec, data, ckpt, params={}, metrics={})
    return exp, data, spec


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """`export_artifacts` of the trained student in all formats: (checks, out_dir)."""
    exp, _, _ = trained
    out = tmp_path_factory.mktemp("artefacts") / "out"
    checks = E.export_artifacts(exp, out, list(E.FORMATS))
    return checks, out


@pytest.fixture(scope="module")
def reference(trained):
    """The PyTorch student as the pipeline exported it, and a function giving its (subclass, class) logits."""
    exp, data, _ = trained
    model, meta = E.load_student(exp / "export")
    membership = class_membership(torch.tensor(meta["subclass_to_class"]))

    @torch.no_grad()
    def logits(x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sub = model(x01)
        return sub, class_logits(sub, membership)

    return model, meta, logits


def _test_batch(data, n: int = 7) -> torch.Tensor:
    """`n` real test digits on the [0, 1] scale: a batch size unlike the trace's and the check's."""
    return torch.from_numpy(data.test.x[:n].astype(np.float32) * data.scale)


def _write_png(path, raw: np.ndarray) -> None:
    """A digits sample (1, 8, 8), values 0..16, as an 8x8 grayscale PNG (pixel = value * 255 / 16)."""
    Image.fromarray(np.round(raw[0].astype(np.float64) * 255 / 16).astype(np.uint8), mode="L").save(path)


def test_the_student_learned(trained, reference):
    _, data, _ = trained
    model, meta, _ = reference
    metrics = E.evaluate_exported(model, meta, data.test.x, data.classes("test"))
    assert metrics["accuracy"] > 0.9


def test_all_formats_round_trip_within_tolerance(exported):
    checks, out = exported
    assert [c.format for c in checks] == ["state_dict", "torchscript", "onnx"]
    for c in checks:
        assert c.ok and c.skipped is None, c
        assert c.path == out / E.FORMATS[c.format] and c.path.is_file()
        assert 0 <= c.max_abs_diff <= E.TOLERANCES[c.format]
        assert c.batch == E.CHECK_BATCH != E.TRACE_BATCH
    assert E.TOLERANCES == {"state_dict": 1e-4, "torchscript": 1e-4, "onnx": 1e-3}
    table = E.format_export(checks)
    for c in checks:
        assert re.search(rf"^{c.format}\s+{re.escape(str(c.path))}\s+\d\.\d\de[-+]\d\d", table, re.M), table


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
    x = _test_batch(data)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference[2](x)[0], atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_and_onnx_reloaded_on_another_batch_size(exported, trained, reference):
    _, out = exported
    _, data, _ = trained
    x = _test_batch(data)
    want_sub, want_cls = reference[2](x)
    assert len(x) not in (E.TRACE_BATCH, E.CHECK_BATCH)

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
    assert set(art["files"]) == set(E.FORMATS)
    for c in checks:
        entry = art["files"][c.format]
        assert entry["path"] == E.FORMATS[c.format] and entry["max_abs_diff"] == c.max_abs_diff
        assert entry["tolerance"] == E.TOLERANCES[c.format]
    assert "dynamo=True" in art["files"]["onnx"]["made_with"]


def test_onnx_skipped_when_onnxruntime_is_missing(trained, tmp_path, monkeypatch):
    exp, _, _ = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"stale")

    def no_onnx():
        raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")

    monkeypatch.setattr(E, "_import_onnx", no_onnx)
    checks = E.export_artifacts(exp, out, ["state_dict", "onnx"])
    assert [c.format for c in checks] == ["state_dict", "onnx"]
    assert checks[0].ok
    onnx = checks[1]
    assert onnx.path is None and onnx.max_abs_diff is None and not onnx.ok
    assert "onnxruntime is not installed" in onnx.skipped and "pip install 'skd-tune[onnx]'" in onnx.skipped
    assert not (out / "model.onnx").exists()  # a stale artefact would not match meta.json
    assert re.search(
        r"^onnx\s+-\s+skipped: onnxruntime is not installed; pip install 'skd-tune\[onnx\]'$",
        E.format_export(checks),
        re.M,
    )
    meta = json.loads((out / "meta.json").read_text())
    assert "pip install" in meta["artefacts"]["files"]["onnx"]["skipped"]


def test_onnx_falls_back_to_the_legacy_exporter(trained, tmp_path, monkeypatch, reference):
    exp, data, _ = trained

    def dynamo_fails(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("simulated failure of the torch.export-based exporter")

    monkeypatch.setattr(E, "_onnx_dynamo", dynamo_fails)
    (check,) = E.export_artifacts(exp, tmp_path, ["onnx"])
    assert check.ok and "legacy" in check.detail and "simulated failure" in check.detail
    session = onnxruntime.InferenceSession(str(check.path), providers=["CPUExecutionProvider"])
    x = _test_batch(data, 5)
    sub, cls = session.run(None, {"input": x.numpy()})
    assert np.abs(cls - reference[2](x)[1].numpy()).max() <= 1e-3


def test_an_artefact_beyond_tolerance_is_an_error(trained, tmp_path, monkeypatch):
    exp, _, _ = trained
    monkeypatch.setitem(E.TOLERANCES, "torchscript", -1.0)  # no difference can pass
    with pytest.raises(
        CheckpointError, match=r"model\.torchscript\.pt: the reloaded torchscript artefact differs .*tolerance -1"
    ):
        E.export_artifacts(exp, tmp_path, ["torchscript"])
    assert not (tmp_path / "model.torchscript.pt").exists()


def test_unknown_format_lists_the_valid_ones(trained, tmp_path):
    exp, _, _ = trained
    with pytest.raises(
        UserError, match=r"unknown export format 'tflite'; valid formats: state_dict, torchscript, onnx"
    ):
        E.export_artifacts(exp, tmp_path / "out", ["state_dict", "tflite"])
    assert not (tmp_path / "out").exists()


def test_missing_export_says_to_finish_the_run(tmp_path):
    exp = tmp_path / "digits-run"
    exp.mkdir()
    (exp / "spec.yaml").write_text("name: digits-run\n")
    with pytest.raises(UserError, match=r"export stage has not run; run `skd-tune run .*digits-run` to finish"):
        E.export_artifacts(exp, tmp_path / "out", ["state_dict"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: neither an skd-tune experiment .* nor an export directory"):
        E.export_artifacts(tmp_path / "empty", tmp_path / "out", ["state_dict"])
    with pytest.raises(UserError, match=r"no such directory"):
        E.predict_inputs(tmp_path / "nowhere", ["a.png"])


def test_load_student_refuses_pickled_code(exported, tmp_path):
    _, out = exported
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text((out / "meta.json").read_text())
    torch.save({"weights": _NotATensor()}, bad / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt: holds pickled objects .*weights_only=True"):
        E.load_student(bad)


class _NotATensor:
    """Pickled by reference: torch.load(weights_only=True) must refuse it."""


def test_predict_png_digits(exported, trained, tmp_path):
    _, out = exported
    _, data, _ = trained
    truth = data.classes("test")[:N_IMAGES]
    files = []
    for i in range(N_IMAGES):
        files.append(tmp_path / f"digit{i}.png")
        _write_png(files[-1], data.test.x[i])
    preds = E.predict_inputs(out, [str(f) for f in files])
    assert [p.name for p in preds] == [f.name for f in files]
    correct = sum(p.class_name == data.class_names[t] for p, t in zip(preds, truth))
    assert correct >= N_IMAGES - 1
    for p in preds:
        assert p.probability == max(p.class_probabilities.values()) and p.probability >= 0.5
        assert list(p.subclass_probabilities) == [str(d) for d in range(10)]
        low = sum(v for k, v in p.subclass_probabilities.items() if int(k) < 5)
        assert p.class_probabilities["0-4"] == pytest.approx(low, abs=1e-5)
        assert sum(p.class_probabilities.values()) == pytest.approx(1, abs=1e-5)


def test_predict_npy_and_csv_hold_raw_values(exported, trained, reference, tmp_path):
    _, out = exported
    _, data, _ = trained
    raw = data.test.x[:N_IMAGES]  # uint8, values 0..16
    np.save(tmp_path / "batch.npy", raw)
    np.save(tmp_path / "one.npy", raw[3])
    flat = raw.reshape(N_IMAGES, -1)
    (tmp_path / "rows.csv").write_text("\n".join(",".join(map(str, r)) for r in flat) + "\n")
    (tmp_path / "header.csv").write_text(
        ",".join(f"px{i}" for i in range(64)) + "\n" + ",".join(map(str, flat[0])) + "\n"
    )
    preds = E.predict_inputs(out, [str(tmp_path / n) for n in ("batch.npy", "one.npy", "rows.csv", "header.csv")])
    names = [p.name for p in preds]
    assert names == [
        *(f"batch.npy[{i}]" for i in range(N_IMAGES)),
        "one.npy",
        *(f"rows.csv[{i}]" for i in range(N_IMAGES)),
        "header.csv[0]",
    ]
    model, meta, _ = reference
    cls_p, _ = E.predict(model, meta, raw)  # the pipeline's own predict on the dataset's raw values
    want = [data.class_names[k] for k in cls_p.argmax(1)]
    assert [p.class_name for p in preds[:N_IMAGES]] == want
    assert [p.class_name for p in preds[N_IMAGES + 1 : 2 * N_IMAGES + 1]] == want
    assert preds[N_IMAGES].class_name == want[3] and preds[-1].class_name == want[0]
    assert [p.probability for p in preds[:N_IMAGES]] == pytest.approx(cls_p.max(1), abs=1e-6)
    truth = data.classes("test")[:N_IMAGES]
    assert sum(w == data.class_names[t] for w, t in zip(want, truth)) >= N_IMAGES - 1


@pytest.mark.parametrize(
    "name, content, match",
    [
        (
            "wide.npy",
            np.zeros((3, 64)),
            r"wide\.npy: array of shape \(3, 64\), but this model takes shape \(N, 1, 8, 8\) or \(1, 8, 8\)",
        ),
        ("text.png", b"not an image", r"text\.png: cannot be read as an image .*1-channel 8x8"),
        ("short.csv", "1,2,3\n", r"short\.csv: line 1 has 3 values, but this model takes 64 per row"),
        (
            "words.csv",
            "a,b\n" + ",".join(["1"] * 64) + "\nx" + ",y" * 63 + "\n",
            r"words\.csv: line 3 has a value that is not a number",
        ),
        ("notes.txt", b"1,2", r"notes\.txt: unsupported file type '\.txt'"),
        ("pickled.npy", np.array([{"a": 1}], dtype=object), r"pickled\.npy: cannot be read as a \.npy array"),
    ],
)
def test_predict_bad_input_names_the_file(exported, tmp_path, name, content, match):
    _, out = exported
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=match):
        E.predict_inputs(out, [str(path)])


def test_format_predictions_one_line_per_input():
    pred = E.Prediction(
        "digit3.png",
        "0-4",
        0.9812,
        {"0-4": 0.9812, "5-9": 0.0188},
        {str(d): p for d, p in enumerate([0.004, 0.003, 0.02, 0.95, 0.002, 0.001, 0.001, 0.001, 0.012, 0.006])},
    )
    assert (
        E.format_predictions([pred, pred]).splitlines()
        == ["digit3.png: 0-4 (p=0.981) | subclasses: 3 0.95, 2 0.02, 8 0.01, 9 0.01, 0 0.00"] * 2
    )
    two = E.Prediction("x.npy[0]", "a", 0.6, {"a": 0.6, "b": 0.4}, {"a1": 0.6, "b1": 0.4})
    assert E.format_predictions([two]) == "x.npy[0]: a (p=0.600) | subclasses: a1 0.60, b1 0.40"


def test_cli_export_and_predict(trained, tmp_path):
    exp, data, _ = trained
    out = tmp_path / "deploy"
    done = run_cli("export", str(exp), "--out", str(out), "--formats", "state_dict,torchscript", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^state_dict\s+{re.escape(str(out / 'model.pt'))}\s+\d", done.stdout, re.M), done.stdout
    assert re.search(rf"^torchscript\s+{re.escape(str(out / 'model.torchscript.pt'))}\s+\d", done.stdout, re.M)
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.pt", "model.torchscript.pt"]

    _write_png(tmp_path / "a.png", data.test.x[0])
    _write_png(tmp_path / "b.png", data.test.x[1])
    done = run_cli("predict", str(out), "a.png", "b.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    truth = [data.class_names[k] for k in data.classes("test")[:2]]
    assert len(lines) == 2
    for line, name, cls in zip(lines, ("a.png", "b.png"), truth):
        assert re.fullmatch(
            rf"{name}: {re.escape(cls)} \(p=[01]\.\d{{3}}\) \| subclasses: (\d \d\.\d\d, ){{4}}\d \d\.\d\d", line
        ), line

    (tmp_path / "c.png").write_text("not an image")
    done = run_cli("predict", str(out), "a.png", "c.png", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.startswith("error: c.png: cannot be read as an image") and "\n" not in message
