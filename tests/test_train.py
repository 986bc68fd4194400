"""Tests of skd_tune.train: real torch training on the bundled digits, on the CPU, one thread."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from skd_tune.data import Dataset, load_dataset
from skd_tune.losses import DistillationLoss
from skd_tune.models import build_model
from skd_tune.spec import DataSpec
from skd_tune.train import (
    DeviceSplit,
    evaluate,
    fit,
    load_state,
    make_optimizer,
    membership_for,
    predict_logits,
    save_state,
    set_threads,
    student_loss,
    teacher_loss,
    train_one_epoch,
)

CPU = torch.device("cpu")
BATCH = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: deterministic and fair to other tests; restored afterwards."""
    old_threads = torch.get_num_threads()
    old_env = os.environ.get("OMP_NUM_THREADS")
    assert set_threads(1) == 1
    yield
    torch.set_num_threads(old_threads)
    if old_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old_env


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(DataSpec(source="digits"), seed=0)


@pytest.fixture(scope="module")
def splits(data: Dataset) -> tuple[DeviceSplit, DeviceSplit]:
    def to_device(split):
        return DeviceSplit.from_numpy(split.x, split.subclass, data.subclass_to_class, data.scale, CPU)

    return to_device(data.train), to_device(data.val)


@pytest.fixture(scope="module")
def membership(data: Dataset) -> torch.Tensor:
    return membership_for(data.subclass_to_class, CPU)


def _model(data: Dataset, name: str = "cnn_small", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, data.num_subclasses, data.input_shape, data.mean, data.std)


@pytest.fixture(scope="module")
def trained_teacher(data, splits, membership):
    """A cnn_small teacher trained for 3 epochs on the subclass labels, with its per-epoch metrics."""
    train, val = splits
    model = _model(data)
    opt = make_optimizer(model, lr=3e-3, weight_decay=0.0)
    history = list(
        fit(
            model,
            opt,
            teacher_loss(train),
            train,
            val,
            membership,
            data.positive_class,
            epochs=3,
            batch_size=BATCH,
            seed=0,
        )
    )
    return model, history


def test_set_threads_floors_the_cpu_share() -> None:
    try:
        assert set_threads(0.5) == 1
        assert set_threads(2.9) == 2
        assert torch.get_num_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        set_threads(1)
    assert torch.get_num_threads() == 1


def test_device_split_scales_and_maps_classes(data: Dataset) -> None:
    x = data.val.x.copy()
    x.setflags(write=False)  # as handed out by Ray's object store
    split = DeviceSplit.from_numpy(x, data.val.subclass, data.subclass_to_class, data.scale, CPU)
    assert len(split) == len(data.val)
    assert split.x.dtype == torch.uint8
    idx = torch.tensor([0, 5, 3])
    expected = torch.from_numpy(data.val.x[[0, 5, 3]].astype(np.float32) / 16.0)
    torch.testing.assert_close(split.batch(idx), expected)
    assert split.batch(idx).max() <= 1.0
    assert torch.equal(split.classes, torch.from_numpy(data.classes("val")))
    # batch() must not scale the stored tensor in place.
    split.batch(idx)
    assert torch.equal(split.x, torch.from_numpy(data.val.x))


def test_teacher_learns_digits(trained_teacher) -> None:
    _, history = trained_teacher
    assert [m["epoch"] for m in history] == [1, 2, 3]
    last = history[-1]
    for key in (
        "train_loss",
        "train_ce",
        "val_f1",
        "val_accuracy",
        "val_auc",
        "val_precision",
        "val_recall",
        "val_loss",
        "val_subclass_accuracy",
        "epoch_time_s",
    ):
        assert key in last and np.isfinite(last[key]), key
    # Generous thresholds: a working loop gets well above them in 3 epochs; a broken one cannot.
    assert last["val_accuracy"] > 0.8
    assert last["val_auc"] > 0.85
    assert last["val_subclass_accuracy"] > 0.5  # chance is 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_evaluate_matches_predictions(trained_teacher, splits, membership, data) -> None:
    model, history = trained_teacher
    _, val = splits
    metrics = evaluate(model, val, membership, data.positive_class, prefix="test_")
    assert metrics["test_accuracy"] == pytest.approx(history[-1]["val_accuracy"])  # same model, same data
    logits = predict_logits(model, val, batch_size=7)  # batch size does not change eval-mode outputs
    torch.testing.assert_close(logits, predict_logits(model, val), rtol=1e-5, atol=1e-5)
    assert logits.shape == (len(val), data.num_subclasses)
    # Class accuracy from the summed subclass probabilities, computed here from the logits.
    p = torch.softmax(logits, dim=1)
    p_pos = p[:, data.subclass_to_class == 1].sum(dim=1)
    acc = float(((p_pos > 0.5).long() == val.classes).float().mean())
    assert metrics["test_accuracy"] == pytest.approx(acc, abs=1.5 / len(val))


def test_train_one_epoch_is_deterministic(data, splits) -> None:
    train, _ = splits

    def run(seed):
        model = _model(data, "cnn_small", seed=1)
        opt = make_optimizer(model, lr=3e-3, weight_decay=1e-4)
        metrics = train_one_epoch(model, opt, train, teacher_loss(train), BATCH, seed=seed)
        return metrics, model.state_dict()

    m1, s1 = run(seed=7)
    m2, s2 = run(seed=7)
    assert m1 == m2
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # The shuffle seed matters: another one gives another result.
    m3, s3 = run(seed=8)
    assert m3["train_loss"] != m1["train_loss"]
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_save_load_state_and_resume_equivalence(data, splits, membership, tmp_path) -> None:
    train, val = splits
    epochs = 4

    # Uninterrupted run.
    model = _model(data, seed=2)
    opt = make_optimizer(model, lr=3e-3, weight_decay=1e-4)
    full = list(
        fit(model, opt, teacher_loss(train), train, val, membership, data.positive_class, epochs, BATCH, seed=3)
    )

    # Interrupted after 2 epochs, checkpointed ...
    model_a = _model(data, seed=2)
    opt_a = make_optimizer(model_a, lr=3e-3, weight_decay=1e-4)
    first = []
    for metrics in fit(
        model_a, opt_a, teacher_loss(train), train, val, membership, data.positive_class, epochs, BATCH, seed=3
    ):
        first.append(metrics)
        if metrics["epoch"] == 2:
            save_state(tmp_path, model_a, opt_a, metrics["epoch"])
            break
    state = load_state(tmp_path)
    assert state["epoch"] == 2

    # ... and restored into a differently initialised model and a fresh optimizer.
    model_b = _model(data, seed=99)
    opt_b = make_optimizer(model_b, lr=3e-3, weight_decay=1e-4)
    assert not torch.equal(model_b.state_dict()["1.0.weight"], model_a.state_dict()["1.0.weight"])
    model_b.load_state_dict(state["model"])
    opt_b.load_state_dict(state["optimizer"])
    for k, v in model_a.state_dict().items():
        assert torch.equal(model_b.state_dict()[k], v), k
    restored = opt_b.state_dict()
    original = opt_a.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for pid, pstate in original["state"].items():
        for k, v in pstate.items():
            assert torch.equal(restored["state"][pid][k], v), (pid, k)

    rest = list(
        fit(
            model_b,
            opt_b,
            teacher_loss(train),
            train,
            val,
            membership,
            data.positive_class,
            epochs,
            BATCH,
            seed=3,
            start_epoch=state["epoch"],
        )
    )
    resumed = first + rest
    assert [m["epoch"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed):
        for k in a:
            if k in ("epoch_time_s", "epoch_end"):  # wall-clock times
                continue
            assert b[k] == pytest.approx(a[k], abs=1e-5), (a["epoch"], k)


def test_student_distills_from_cached_teacher_logits(trained_teacher, data, splits, membership) -> None:
    teacher, _ = trained_teacher
    train, val = splits
    teacher_logits = predict_logits(teacher, train)
    assert teacher_logits.shape == (len(train), data.num_subclasses)
    objective = DistillationLoss(membership, temperature=4.0, w_ce=1.0, w_kd=0.5, w_skd=1.0)
    student = _model(data, "mlp_tiny", seed=4)
    opt = make_optimizer(student, lr=3e-3, weight_decay=0.0)
    history = list(
        fit(
            student,
            opt,
            student_loss(train, teacher_logits, objective),
            train,
            val,
            membership,
            data.positive_class,
            epochs=3,
            batch_size=BATCH,
            seed=5,
        )
    )
    for m in history:
        for key in ("train_loss", "train_ce", "train_kd", "train_skd"):
            assert np.isfinite(m[key]) and m[key] >= 0, key
        # The total is the weighted sum of the parts (each a batch mean, averaged over batches).
        assert m["train_loss"] == pytest.approx(m["train_ce"] + 0.5 * m["train_kd"] + m["train_skd"], rel=1e-5)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["train_skd"] < history[0]["train_skd"]
    assert history[-1]["val_accuracy"] > 0.7


def test_student_without_teacher(data, splits, membership) -> None:
    train, val = splits
    objective = DistillationLoss(membership, w_ce=1.0, w_kd=0.0, w_skd=0.0)
    student = _model(data, "mlp_tiny", seed=6)
    opt = make_optimizer(student, lr=3e-3, weight_decay=0.0)
    history = list(
        fit(
            student,
            opt,
            student_loss(train, None, objective),
            train,
            val,
            membership,
            data.positive_class,
            epochs=2,
            batch_size=BATCH,
            seed=0,
        )
    )
    assert set(k for k in history[0] if k.startswith("train_")) == {"train_loss", "train_ce", "train_share"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # With w_skd > 0 the same loop refuses to run without teacher logits.
    bad = DistillationLoss(membership, w_skd=1.0)
    with pytest.raises(ValueError, match="needs the teacher's subclass logits"):
        train_one_epoch(student, opt, train, student_loss(train, None, bad), BATCH, seed=0)


def test_train_one_epoch_skips_a_trailing_batch_of_one(data) -> None:
    # 65 samples in batches of 64: the last batch holds one sample and is skipped (batch norm).
    sub = data.train.subclass[:65]
    split = DeviceSplit.from_numpy(data.train.x[:65], sub, data.subclass_to_class, data.scale, CPU)
    model = _model(data)
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    seen = []

    def loss_fn(out, idx, view=None):
        seen.append(len(idx))
        return teacher_loss(split)(out, idx)

    train_one_epoch(model, opt, split, loss_fn, 64, seed=0)
    assert seen == [64]
    # An `order` restricts the epoch to those indices.
    seen.clear()
    train_one_epoch(model, opt, split, loss_fn, 8, seed=0, order=torch.arange(20))
    assert seen == [8, 8, 4]


def _invented_teacher(beta: float):
    """An mlp teacher with 5 outputs per digits class, trained 8 epochs on the class labels plus
    beta * the auxiliary loss; returns its history, its test-split logits and the dataset."""
    from skd_tune.losses import TeacherLoss

    data = load_dataset(DataSpec(source="digits", subclasses="invented", subclasses_per_class=5), seed=0)

    def split(name):
        return DeviceSplit.from_numpy(
            data.split(name).x, data.targets(name), data.group_to_class, data.scale, CPU, data.outputs_per_group
        )

    train, val, test = split("train"), split("val"), split("test")
    torch.manual_seed(0)
    model = build_model("mlp", data.num_outputs, data.input_shape, data.mean, data.std)
    opt = make_optimizer(model, lr=3e-3, weight_decay=0.0)
    objective = TeacherLoss(membership_for(data.output_to_group, CPU), beta=beta, t_aux=1.0)
    history = list(
        fit(
            model,
            opt,
            teacher_loss(train, objective),
            train,
            val,
            membership_for(data.output_to_class, CPU),
            data.positive_class,
            epochs=8,
            batch_size=BATCH,
            seed=0,
        )
    )
    return history, predict_logits(model, test).numpy(), data


def test_invented_subclass_teacher_spreads_and_finds_the_digits() -> None:
    """With beta > 0 (Müller et al. 2020) the teacher uses more than one of its 5 subclasses per class,
    much more evenly than with beta = 0 (where a class collapses onto few outputs), and its invented
    subclasses match the true digits on the test split far better than chance (AMI > 0.2)."""
    from skd_tune.metrics import subclass_ami, subclass_usage

    usage, ami = {}, {}
    for beta in (0.0, 1.0):
        history, logits, data = _invented_teacher(beta)
        last = history[-1]
        assert {"train_ce", "train_aux"} <= set(last) and last["val_f1"] > 0.9
        # the subclass accuracy of an invented teacher compares the output's group (its class) with the class
        assert last["val_subclass_accuracy"] == pytest.approx(last["val_accuracy"], abs=1e-6)
        probs = torch.softmax(torch.as_tensor(logits), 1).numpy()
        usage[beta] = subclass_usage(probs, data.classes("test"), data.output_to_class)["per_class"]
        ami[beta] = subclass_ami(logits, data.test.subclass)
        if beta > 0:
            assert last["train_aux"] < history[0]["train_aux"] <= 0.0  # each batch spread further apart
    for row in usage[1.0]:
        assert sum(n > 0 for n in row["counts"]) > 1 and row["entropy_bits"] > 1.0
    mean_entropy = {b: np.mean([r["entropy_bits"] for r in usage[b]]) for b in usage}
    assert mean_entropy[1.0] > mean_entropy[0.0] + 0.5
    assert ami[1.0] > 0.2
