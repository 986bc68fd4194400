"""What the serve tests share: a real mlp_tiny student trained on scikit-learn's digits and exported
by `export_student` (the session fixtures `trained` and `reference` in conftest.py use these)."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
from PIL import Image

from skd_tune.data import load_dataset
from skd_tune.losses import class_logits, class_membership
from skd_tune.models import build_model
from skd_tune.serve import export_student, load_student
from skd_tune.spec import Spec
from skd_tune.train import DeviceSplit, fit, make_optimizer, membership_for, save_state, set_threads, teacher_loss

from .conftest import TINY_SPEC

CPU = torch.device("cpu")
EPOCHS = 12


@contextlib.contextmanager
def one_thread():
    """One intra-op thread (also for the CLI subprocesses, through OMP_NUM_THREADS): on a busy machine
    torch's thread pool costs more than it gains on models this small. Restored afterwards."""
    old_threads = torch.get_num_threads()
    old_env = os.environ.get("OMP_NUM_THREADS")
    set_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        if old_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old_env


def train_and_export(tmp_path_factory):
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
    export_student(exp / "export", spec, data, ckpt, params={}, metrics={})
    return exp, data, spec


def reference_logits(export_dir):
    """The PyTorch student as the pipeline exported it, its meta, and a function giving its (subclass,
    class) logits."""
    model, meta = load_student(export_dir)
    membership = class_membership(torch.tensor(meta["subclass_to_class"]))

    @torch.no_grad()
    def logits(x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sub = model(x01)
        return sub, class_logits(sub, membership)

    return model, meta, logits


def digits_batch(data, n: int = 7) -> torch.Tensor:
    """`n` real test digits on the [0, 1] scale: a batch size unlike the trace's and the check's."""
    return torch.from_numpy(data.test.x[:n].astype(np.float32) * data.scale)


def write_png(path, raw: np.ndarray) -> None:
    """A digits sample (1, 8, 8), values 0..16, as an 8x8 grayscale PNG (pixel = value * 255 / 16)."""
    Image.fromarray(np.round(raw[0].astype(np.float64) * 255 / 16).astype(np.uint8), mode="L").save(path)
