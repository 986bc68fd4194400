"""End to end: `skd-tune run` as a subprocess on local Ray, real Optuna, torch and Parquet files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from skd_tune.data import load_dataset
from skd_tune.serve import evaluate_exported, load_student, predict
from skd_tune.spec import load_spec

from .conftest import REPO, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny search, shared by the assertions below: (cwd, spec path, experiment dir, process). Its
    augmented students distil the teacher's logits of the view each image was given (`teacher_logits: views`)."""
    from .conftest import TINY_SPEC, deep_update

    cwd = tmp_path_factory.mktemp("tiny")
    spec_path = cwd / "tiny.yaml"
    changes = {"methods": {"seeds": 2}, "teacher_logits": "views", "student": {"augment": True}}
    spec_path.write_text(yaml.safe_dump(deep_update(TINY_SPEC, changes), sort_keys=False))
    proc = run_cli("run", str(spec_path), cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd, spec_path, cwd / "runs" / "tiny", proc


def test_progress_lines_not_ray_logs(tiny_run):
    _, _, _, proc = tiny_run
    out = proc.stdout
    assert "[teacher] trials 1/1 done" in out
    assert "[student] trials 4/4 done, 0 running, 0 pending, 0 errored | best val_f1" in out
    assert "loaded back: test f1" in out
    assert "H(S|C) = 2.32" in out
    assert re.search(r"\[teacher\] its subclass probabilities carry I_T\(S;X\|C\) = \d\.\d{3} bits", out)
    assert "[teacher] logits cached in" in out and "(8 views of every training image: flips and turns)" in out
    # Ray's own output is off unless -v: no trial tables, no worker log prefixes
    assert "Trial status" not in out and "(pid=" not in out
    assert "Traceback" not in proc.stderr


def test_experiment_layout_and_state(tiny_run):
    _, spec_path, exp, _ = tiny_run
    for path in (
        "spec.yaml",
        "state.json",
        "teacher",
        "teacher_logits",
        "student",
        "results/trials.parquet",
        "results/epochs.parquet",
        "export/model.pt",
        "export/meta.json",
    ):
        assert (exp / path).exists(), path
    state = json.loads((exp / "state.json").read_text())
    assert set(state["stages"]) == {
        "teacher",
        "teacher_logits",
        "student",
        "export",
        "search_kd",
        "search_nokd",
        "methods",
    }
    bits = state["stages"]["teacher_logits"]["subclass_bits"]  # I_T(S;X|C) of the teacher, per class too
    assert 0 < bits["bits"] <= bits["max_bits"] == pytest.approx(np.log2(5), abs=0.01)
    assert set(bits["per_class"]) == {"0-4", "5-9"}
    frozen = yaml.safe_load((exp / "spec.yaml").read_text())
    assert frozen == load_spec(spec_path).model_dump(mode="json")
    summary = json.loads((exp / "results" / "data.json").read_text())
    assert summary["label_bits_train"] == pytest.approx(np.log2(5), abs=0.01)  # 5 equally common digits per class
    assert sum(summary["split_sizes"].values()) == 1797


def test_teacher_logits_cover_every_split(tiny_run):
    _, spec_path, exp, _ = tiny_run
    data = load_dataset(load_spec(spec_path).data, 0)
    for split in ("train", "val", "test"):
        logits = np.load(exp / "teacher_logits" / f"{split}.npy")
        views = (8,) if split == "train" else ()  # teacher_logits: views, digits are square images
        assert logits.shape == (len(data.split(split)), *views, data.num_subclasses)
        assert np.isfinite(logits).all()
    # the cached teacher is better than chance on the test split
    acc = (np.load(exp / "teacher_logits" / "test.npy").argmax(1) == data.test.subclass).mean()
    assert acc > 0.5


def test_trials_and_epochs_tables(tiny_run):
    _, _, exp, _ = tiny_run
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    epochs = pd.read_parquet(exp / "results" / "epochs.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    for col in (
        "temperature",
        "w_skd",
        "w_kd",
        "lr",
        "status",
        "best_val_f1",
        "last_val_f1",
        "epochs",
        "checkpoint_path",
        "error",
    ):
        assert col in trials, col
    assert (trials["status"] == "TERMINATED").all()
    assert trials["temperature"].between(1.0, 10.0).all() and trials["w_skd"].between(0, 1).all()
    assert trials["epochs"].between(1, 3).all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (
        epochs.groupby("trial_id").size().sort_index().tolist()
        == trials.set_index("trial_id")["epochs"].sort_index().tolist()
    )
    for rel in trials["checkpoint_path"]:
        assert (exp / rel / "state.pt").exists()
    # Checkpoints are not written every epoch (search.checkpoint_interval_s), yet every trial's latest
    # checkpoint holds its best epoch's weights, including trials ASHA stopped at a rung (1 or 2 here).
    for t in trials.itertuples():
        state = torch.load(exp / t.checkpoint_path / "state.pt", weights_only=True)
        mine = epochs[epochs["trial_id"] == t.trial_id]
        assert state["best"]["epoch"] == int(mine.loc[mine["val_f1"].idxmax(), "epoch"]), t.trial_id
    teacher = pd.read_parquet(exp / "results" / "teacher_epochs.parquet")
    assert teacher["epoch"].tolist() == [1, 2, 3]


def test_export_loads_with_weights_only_and_predicts(tiny_run):
    _, spec_path, exp, _ = tiny_run
    state = torch.load(exp / "export" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model, meta = load_student(exp / "export")
    data = load_dataset(load_spec(spec_path).data, 0)
    metrics = evaluate_exported(model, meta, data.test.x, data.classes("test"))
    assert metrics == pytest.approx(meta["metrics"]["test"])
    assert metrics["accuracy"] > 0.7  # 3 epochs of a tiny MLP; chance is 0.5
    class_p, sub_p = predict(model, meta, data.test.x[:5])
    assert class_p.shape == (5, 2) and sub_p.shape == (5, 10)
    np.testing.assert_allclose(class_p.sum(1), 1, atol=1e-5)
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    assert meta["metrics"]["val"]["trial_id"] == trials.loc[trials["best_val_f1"].idxmax(), "trial_id"]


def test_method_table_stage(tiny_run):
    """KD and no-KD searched with the student search's budget (methods.search: per_method), then each
    method's best configuration retrained with the same 2 seeds and scored on the test split."""
    _, _, exp, proc = tiny_run
    trials = {
        m: pd.read_parquet(exp / "results" / f"{prefix}trials.parquet")
        for m, prefix in (("SKD", ""), ("KD", "kd_"), ("no-KD", "nokd_"))
    }
    assert all(len(t) == 4 and (t["status"] == "TERMINATED").all() for t in trials.values())  # the same budget
    assert (trials["KD"]["w_skd"] == 0).all() and trials["KD"]["w_kd"].between(0, 1).all()
    assert trials["KD"]["w_kd"].nunique() > 1 and trials["KD"]["temperature"].nunique() > 1  # searched
    assert (trials["no-KD"][["w_kd", "w_skd"]] == 0).all().all() and "temperature" not in trials["no-KD"]
    assert "methods: KD and no-KD get a search of their own with the same budget (4 trials each)" in proc.stdout

    runs = pd.read_parquet(exp / "results" / "methods.parquet")
    assert list(runs["method"]) == ["no-KD", "no-KD", "KD", "KD", "SKD", "SKD"]
    assert list(runs["seed"]) == [0, 1] * 3 and (runs["status"] == "TERMINATED").all()
    by = runs.set_index(["method", "seed"])
    for method, table in trials.items():
        best = table.loc[table["best_val_f1"].idxmax()]  # each method at the best trial of its own search
        assert (by.loc[method, "lr"] == best["lr"]).all(), method
        assert (by.loc[method, "w_kd"] == best["w_kd"]).all() and (by.loc[method, "w_skd"] == best["w_skd"]).all()
    assert by.loc["KD", "w_skd"].eq(0).all() and by.loc["no-KD", ["w_kd", "w_skd"]].eq(0).all().all()
    for m in ("f1", "accuracy", "auc", "precision", "recall"):
        assert runs[f"test_{m}"].between(0, 1).all()
    assert runs["best_epoch"].between(1, 3).all()
    assert by.loc["no-KD", "val_loss"].nunique() == 2  # seeds differ: the two runs did not train identically
    summary = pd.read_parquet(exp / "results" / "methods_summary.parquet")
    assert list(summary["method"]) == ["no-KD", "KD", "SKD", "teacher", "constant"]
    skd = runs[runs["method"] == "SKD"]["test_f1"]
    assert summary.set_index("method").loc["SKD", "f1_mean"] == pytest.approx(skd.mean())
    assert summary.set_index("method").loc["SKD", "f1_std"] == pytest.approx(skd.std(ddof=1))
    assert "[methods] trials 6/6 done" in proc.stdout and "SKD − KD: " in proc.stdout
    # the paired differences (same seeds for every method), as the run printed them
    pairs = pd.read_parquet(exp / "results" / "methods_pairs.parquet").set_index(["a", "b"])
    paired = by.loc["SKD", "test_f1"] - by.loc["KD", "test_f1"]
    assert pairs.loc[("SKD", "KD"), "mean"] == pytest.approx(paired.mean()) and pairs.loc[("SKD", "KD"), "n"] == 2
    assert pairs.loc[("SKD", "KD"), "line"] in proc.stdout
    assert len(list((exp / "final").glob("method_trainable_*"))) == 6


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_rerun_of_a_finished_experiment_rewrites_nothing_and_starts_no_ray(tiny_run):
    cwd, spec_path, exp, _ = tiny_run
    before = _files(exp)
    proc = run_cli("run", str(spec_path), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "(resuming)" in proc.stdout and "[methods] test metrics" in proc.stdout
    assert "[export] best student" in proc.stdout and "[teacher] done" in proc.stdout
    assert "trials 4/4 done" not in proc.stdout  # no stage ran
    # Not a file written, touched or added under the experiment: no export rewritten, no state, no lock,
    # and no .driver.json (a driver records there the local Ray it starts: this one started none).
    assert _files(exp) == before
    assert not (exp / ".driver.json").exists()


def test_damaged_teacher_logits_are_recomputed_before_the_method_table(tiny_run, tmp_path):
    """The cached logits are derived from the teacher's checkpoint: truncated, with the method stage still
    to run, they are computed again (one line says so) and the run finishes."""
    import shutil

    _, _, exp, _ = tiny_run
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(exp, copy)
    state = json.loads((copy / "state.json").read_text())
    del state["stages"]["methods"], state["started"]["methods"]
    (copy / "state.json").write_text(json.dumps(state))
    shutil.rmtree(copy / "final")
    train = copy / "teacher_logits" / "train.npy"
    train.write_bytes(train.read_bytes()[:200])
    proc = run_cli("run", str(copy), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{train} is missing or damaged" in proc.stdout and "recomputing the teacher's logits" in proc.stdout
    np.testing.assert_allclose(np.load(train), np.load(exp / "teacher_logits" / "train.npy"), atol=1e-5)
    assert "methods" in json.loads((copy / "state.json").read_text())["stages"]


def test_changed_spec_is_refused(tiny_run, tmp_path):
    cwd, spec_path, exp, _ = tiny_run
    raw = yaml.safe_load(spec_path.read_text())
    raw["student"]["epochs"] = 5
    changed = cwd / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    proc = run_cli("run", str(changed), cwd=cwd)
    assert proc.returncode == 2
    assert "student.epochs: 3 -> 5" in proc.stderr
    assert "new `name:`" in proc.stderr and "Traceback" not in proc.stderr


def test_digits_demo_meets_acceptance(tmp_path):
    """The README's `make run` spec: num_samples trials recorded and the exported student's test F1 > 0.9."""
    spec_path = REPO / "search_spaces" / "digits.yaml"
    spec = load_spec(spec_path)
    proc = run_cli("run", str(spec_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / spec.storage / spec.name
    trials = pd.read_parquet(exp / "results" / "trials.parquet")
    assert len(trials) == spec.search.num_samples
    model, meta = load_student(exp / "export")
    data = load_dataset(spec.data, spec.seed)
    assert evaluate_exported(model, meta, data.test.x, data.classes("test"))["f1"] > 0.9

    # the method table with 3 seeds per method, printed by `skd-tune report`, and the HTML report
    assert spec.methods.seeds >= 3
    report = run_cli("report", str(exp), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    for method in ("no-KD", "KD", "SKD"):
        assert re.search(rf"^{method}\s+{spec.methods.seeds}\s+0\.\d{{4}} ± 0\.\d{{4}}", report.stdout, re.M), (
            report.stdout
        )
    assert "SKD − KD: " in report.stdout and "95% CI" in report.stdout and (exp / "report" / "index.html").exists()
    runs = pd.read_parquet(exp / "results" / "methods.parquet")
    assert len(runs) == 3 * spec.methods.seeds and (runs["status"] == "TERMINATED").all()

    # export to the three formats, then predict a few test digits from PNG files
    out = tmp_path / "best"
    export = run_cli("export", str(exp), "--out", str(out), cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert all((out / f).exists() for f in ("model.pt", "meta.json", "model.torchscript.pt", "model.onnx"))
    from PIL import Image

    paths = []
    for i in range(6):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((data.test.x[i, 0].astype(np.float64) * 255 / 16).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    pred = run_cli("predict", str(out), *paths, cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    lines = [ln for ln in pred.stdout.splitlines() if ln.startswith("digit")]
    truth = [data.class_names[c] for c in data.classes("test")[:6]]
    predicted = [ln.split(": ", 1)[1].split(" ")[0] for ln in lines]
    assert len(lines) == 6 and sum(p == t for p, t in zip(predicted, truth)) >= 5, (lines, truth)


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_damaged_checkpoint_is_a_clear_error(tiny_run, tmp_path, which):
    """A truncated checkpoint file: exit 2, one paragraph naming the file and the fix, nothing else lost."""
    import shutil

    cwd, spec_path, exp, _ = tiny_run
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(exp, copy)
    state = json.loads((copy / "state.json").read_text())
    if which == "teacher":
        ckpt = copy / state["stages"]["teacher"]["checkpoint"] / "state.pt"
        del state["stages"]["teacher_logits"], state["stages"]["student"], state["stages"]["export"]
    else:
        trials = pd.read_parquet(copy / "results" / "trials.parquet")
        ckpt = copy / trials.loc[trials["best_val_f1"].idxmax(), "checkpoint_path"] / "state.pt"
        del state["stages"]["export"]
    (copy / "state.json").write_text(json.dumps(state))
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    before = pd.read_parquet(copy / "results" / "trials.parquet")

    proc = run_cli("run", str(copy), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{ckpt}: damaged checkpoint" in proc.stderr and "Delete that checkpoint directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "results" / "trials.parquet"), before)


def test_cmaes_sampler_with_int_and_choice_parameters(tmp_path, write_spec):
    """CMA-ES over a log-uniform, an int and a choice parameter (the last two it samples independently).
    The random sampler runs in tests/test_pipeline_invented.py."""
    path = write_spec(
        {
            "search": {
                "sampler": "cmaes",
                "num_samples": 3,
                "scheduler": {"name": "fifo"},
                "space": {
                    "temperature": {"loguniform": [1.0, 10.0]},
                    "batch_size": {"int": [32, 128]},
                    "curriculum.pacing": {"choice": ["none", "linear"]},
                },
            },
            "student": {"epochs": 2},
        }
    )
    proc = run_cli("run", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = pd.read_parquet(tmp_path / "runs" / "tiny" / "results" / "trials.parquet")
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all()
    # FIFO, 2 short epochs, checkpoint_interval_s 10: one checkpoint per trial, at its last epoch
    assert all(Path(p).name == "checkpoint_000000" for p in trials["checkpoint_path"]), trials[
        "checkpoint_path"
    ].tolist()
    assert pd.api.types.is_integer_dtype(trials["batch_size"]) and trials["batch_size"].between(32, 128).all()
    assert set(trials["curriculum.pacing"]) <= {"none", "linear"}


def test_a_second_driver_is_refused_and_a_killed_driver_s_lock_does_not_block(write_spec, tmp_path):
    """Two `skd-tune run` on one experiment: the second exits 2 naming the first (status still works
    beside it); the first is then SIGKILLed at a known point and the same command resumes and finishes."""
    import signal

    from .conftest import Barrier, start_cli

    path = write_spec({"search": {"num_samples": 2, "scheduler": {"name": "fifo"}}, "student": {"epochs": 2}})
    barrier = Barrier(tmp_path / "barrier", "student", 1)
    log = tmp_path / "first.log"
    first = start_cli("run", str(path), cwd=tmp_path, log=log, env=barrier.env)
    try:
        barrier.wait(first, n=1, log=log)
        second = run_cli("run", str(path), cwd=tmp_path, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert re.search(
            rf"^error: .*tiny is being run by another skd-tune driver \(host .*, pid {first.pid}, since ", second.stderr
        )
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
        status = run_cli("status", str(tmp_path / "runs" / "tiny"), cwd=tmp_path, timeout=120)
        assert status.returncode == 0 and "student -" in status.stdout
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    again = run_cli("run", str(path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(resuming)" in again.stdout and "[student] trials 2/2 done" in again.stdout
