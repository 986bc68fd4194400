"""Tests of skd_tune.serve.predictions: predictions of the digits student of test_serve_artifact.py for PNG,
.npy and .csv inputs, the errors a user can meet, the same image decoding as the MHIST loader, and the
CLI as a real subprocess."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
from PIL import Image

from skd_tune.data.mhist import _decode_one
from skd_tune.errors import DataError
from skd_tune.serve import Prediction, format_predictions, predict, predict_inputs

from .conftest import run_cli
from .serve_helpers import one_thread, write_png

N_IMAGES = 10
serve_predictions = importlib.import_module("skd_tune.serve.predictions")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def out(trained):
    """The export directory predictions are made from."""
    exp, _, _ = trained
    return exp / "export"


def test_predict_png_digits(out, trained, tmp_path):
    _, data, _ = trained
    truth = data.classes("test")[:N_IMAGES]
    files = []
    for i in range(N_IMAGES):
        files.append(tmp_path / f"digit{i}.png")
        write_png(files[-1], data.test.x[i])
    preds = predict_inputs(out, [str(f) for f in files])
    assert [p.name for p in preds] == [f.name for f in files]
    correct = sum(p.class_name == data.class_names[t] for p, t in zip(preds, truth))
    assert correct >= N_IMAGES - 1
    for p in preds:
        assert p.probability == max(p.class_probabilities.values()) and p.probability >= 0.5
        assert list(p.subclass_probabilities) == [str(d) for d in range(10)]
        low = sum(v for k, v in p.subclass_probabilities.items() if int(k) < 5)
        assert p.class_probabilities["0-4"] == pytest.approx(low, abs=1e-5)
        assert sum(p.class_probabilities.values()) == pytest.approx(1, abs=1e-5)


def test_predict_npy_and_csv_hold_raw_values(out, trained, reference, tmp_path):
    _, data, _ = trained
    raw = data.test.x[:N_IMAGES]  # uint8, values 0..16
    np.save(tmp_path / "batch.npy", raw)
    np.save(tmp_path / "one.npy", raw[3])
    flat = raw.reshape(N_IMAGES, -1)
    (tmp_path / "rows.csv").write_text("\n".join(",".join(map(str, r)) for r in flat) + "\n")
    (tmp_path / "header.csv").write_text(
        ",".join(f"px{i}" for i in range(64)) + "\n" + ",".join(map(str, flat[0])) + "\n"
    )
    preds = predict_inputs(out, [str(tmp_path / n) for n in ("batch.npy", "one.npy", "rows.csv", "header.csv")])
    names = [p.name for p in preds]
    assert names == [
        *(f"batch.npy[{i}]" for i in range(N_IMAGES)),
        "one.npy",
        *(f"rows.csv[{i}]" for i in range(N_IMAGES)),
        "header.csv[0]",
    ]
    model, meta, _ = reference
    cls_p, _ = predict(model, meta, raw)  # the pipeline's own predict on the dataset's raw values
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
def test_predict_bad_input_names_the_file(out, tmp_path, name, content, match):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=match):
        predict_inputs(out, [str(path)])


def test_format_predictions_one_line_per_input():
    pred = Prediction(
        "digit3.png",
        "0-4",
        0.9812,
        {"0-4": 0.9812, "5-9": 0.0188},
        {str(d): p for d, p in enumerate([0.004, 0.003, 0.02, 0.95, 0.002, 0.001, 0.001, 0.001, 0.012, 0.006])},
    )
    assert (
        format_predictions([pred, pred]).splitlines()
        == ["digit3.png: 0-4 (p=0.981) | subclasses: 3 0.95, 2 0.02, 8 0.01, 9 0.01, 0 0.00"] * 2
    )
    two = Prediction("x.npy[0]", "a", 0.6, {"a": 0.6, "b": 0.4}, {"a1": 0.6, "b1": 0.4})
    assert format_predictions([two]) == "x.npy[0]: a (p=0.600) | subclasses: a1 0.60, b1 0.40"


@pytest.mark.parametrize("size", [(64, 48), (32, 32)], ids=["resized", "as-is"])
def test_mhist_loader_and_predict_decode_an_image_alike(tmp_path, size):
    """No train/serve mismatch: an image `skd-tune predict` is given becomes the array the MHIST loader
    trains on (uint8 (3, S, S), converted to RGB and resized bilinearly), divided by 255."""
    rng = np.random.default_rng(0)
    path = tmp_path / "polyp.png"
    Image.fromarray(rng.integers(0, 256, (*size, 4), dtype=np.uint8), mode="RGBA").save(path)  # RGBA: converted
    trained_on = _decode_one(path, 32, line=2, csv_path=tmp_path / "annotations.csv")
    served = serve_predictions._read_image(path, (3, 32, 32))
    assert trained_on.dtype == np.uint8 and trained_on.shape == (3, 32, 32)
    assert served.dtype == np.float32 and served.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(served[0], trained_on.astype(np.float32) / 255.0)
    assert np.array_equal(np.round(served[0] * 255).astype(np.uint8), trained_on)


def test_cli_export_and_predict(trained, tmp_path):
    exp, data, _ = trained
    out = tmp_path / "deploy"
    done = run_cli("export", str(exp), "--out", str(out), "--formats", "state_dict,torchscript", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^state_dict\s+{re.escape(str(out / 'model.pt'))}\s+\d", done.stdout, re.M), done.stdout
    assert re.search(rf"^torchscript\s+{re.escape(str(out / 'model.torchscript.pt'))}\s+\d", done.stdout, re.M)
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.pt", "model.torchscript.pt"]

    write_png(tmp_path / "a.png", data.test.x[0])
    write_png(tmp_path / "b.png", data.test.x[1])
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
