"""What a trial trains (recipes.py), built from a spec on the digits data, in plain torch."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from skd_tune.curriculum import LOSS_LEVELS, curriculum_order, level_ends, teacher_difficulty
from skd_tune.data import Split, load_dataset, train_rows
from skd_tune.recipes import build_student_run, build_teacher_run, group_logits
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


def test_levels_curriculum_from_teacher_loss_quartiles_or_from_annotations():
    """Without annotations `levels` admits quartiles of the teacher's loss (the other pacings keep the
    continuous loss); with annotations (the teacher's curriculum too) it admits the agreement levels."""
    spec = validate_spec(deep_update(TINY_SPEC, {"student": {"epochs": 4}}))
    data = load_dataset(spec.data, spec.seed)
    logits = np.random.default_rng(1).normal(size=(len(data.train), data.num_outputs)).astype(np.float32)
    loss = teacher_difficulty(group_logits(logits, data.outputs_per_group), data.targets("train"))
    levels = build_student_run(spec.student_for({"curriculum.pacing": "levels"}), spec, data, logits, 0, CPU)
    c = levels.curriculum
    n = len(data.train)
    assert len(c.level_ends) == LOSS_LEVELS and c.level_ends[-1] == n
    assert all(abs(b - a - n / LOSS_LEVELS) <= 1 for a, b in zip((0, *c.level_ends), c.level_ends))  # quartiles
    first = c.order[: c.level_ends[0]].numpy()
    assert loss[first].max() <= np.quantile(loss, 0.25) < np.delete(loss, first).min()  # the lowest losses
    shares = [m["train_share"] for m, _ in levels.epochs()]  # full_at 0.5 of 4 epochs: 1, 2, 4, 4 levels
    assert shares[0] == c.level_ends[0] / n and shares[2:] == [1.0, 1.0]
    linear = build_student_run(spec.student_for({"curriculum.pacing": "linear"}), spec, data, logits, 0, CPU)
    assert linear.curriculum.level_ends == level_ends(loss, curriculum_order(loss, 0))  # unchanged: continuous
    assert len(linear.curriculum.level_ends) > LOSS_LEVELS

    agreement = np.random.default_rng(2).choice([7, 6, 5, 4], size=n)
    graded = dataclasses.replace(
        data, train=Split(data.train.x, data.train.subclass, ((7 - agreement) / 3.0).astype(np.float32))
    )
    spec = validate_spec(deep_update(TINY_SPEC, {"teacher": {"curriculum": {"pacing": "levels"}, "epochs": 1}}))
    teacher = build_teacher_run(spec, graded, {}, device=CPU).curriculum
    assert teacher.level_ends == tuple(np.cumsum([(agreement == a).sum() for a in (7, 6, 5, 4)]).tolist())
    assert (agreement[teacher.order[: teacher.level_ends[0]].numpy()] == 7).all()  # unanimous first


def test_a_student_run_is_built_at_its_width_and_carries_its_cost():
    from skd_tune.names import COST_METRICS

    spec = validate_spec(
        deep_update(TINY_SPEC, {"student": {"epochs": 1}, "search": {"space": {"width": {"uniform": [0.5, 2.0]}}}})
    )
    data = load_dataset(spec.data, spec.seed)
    runs = {w: build_student_run(spec.student_for({"width": w}), spec, data, None, seed=0, device=CPU) for w in (1, 2)}
    for run in runs.values():
        assert tuple(run.cost) == COST_METRICS
        assert run.cost["params"] == sum(p.numel() for p in run.model.parameters())
        assert run.cost["macs"] > 0 and run.cost["latency_ms_b1"] > 0 and run.cost["weights_bytes"] > 0
        assert run.model.training  # measured in eval mode, handed back for training
    hidden = [m.out_features for m in runs[2].model.modules() if isinstance(m, torch.nn.Linear)][0]
    assert hidden == 32  # mlp_tiny's 16 hidden units at width 2
    assert runs[2].cost["params"] > runs[1].cost["params"]
    assert build_teacher_run(spec, data, {}, device=CPU).cost is None  # only students are costed
