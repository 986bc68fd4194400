"""What a trial trains (recipes.py), built from a spec on the digits data, in plain torch."""

from __future__ import annotations

import numpy as np
import torch

from skd_tune.data import load_dataset, train_rows
from skd_tune.recipes import build_student_run, build_teacher_run
from skd_tune.spec import validate_spec

from .conftest import TINY_SPEC, deep_update

CPU = torch.device("cpu")


def test_students_train_on_the_data_train_fraction_with_the_matching_teacher_logits():
    spec = validate_spec(deep_update(TINY_SPEC, {"data": {"train_fraction": 0.5}, "student": {"epochs": 1}}))
    data = load_dataset(spec.data, spec.seed)
    logits = np.random.default_rng(0).normal(size=(len(data.train), data.num_outputs)).astype(np.float32)
    only_skd = spec.student_for({"w_ce": 0.0, "w_kd": 0.0, "w_skd": 1.0, "temperature": 1.0})
    run = build_student_run(only_skd, spec, data, logits, seed=0, device=CPU)
    rows = train_rows(data.train.subclass, 0.5, spec.seed)
    assert len(run.train) == len(rows) < len(data.train) and len(run.val) == len(data.val)  # validation whole
    np.testing.assert_array_equal(run.train.x[:8].numpy(), data.train.x[rows[:8]])
    # Batch index i of the student's split is training row rows[i]: the distillation target is that row's
    # teacher logits (KL 0 when the student outputs exactly them), not row i's.
    batch = torch.tensor([5, 6])
    matched, _ = run.loss_fn(torch.from_numpy(logits[rows[5:7]]), batch)
    shifted, _ = run.loss_fn(torch.from_numpy(logits[5:7]), batch)
    assert float(matched) < 1e-5 < float(shifted)
    teacher = build_teacher_run(spec, data, {}, device=CPU)
    assert len(teacher.train) == len(data.train)  # the teacher: the whole split unless teacher.train_fraction
    metrics = [m for m, _ in run.epochs()]
    assert [m["epoch"] for m in metrics] == [1] and 0 <= metrics[0]["val_f1"] <= 1
