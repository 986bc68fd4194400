"""Checks of a spec against its data before anything is written or any Ray work starts."""

from __future__ import annotations

import numpy as np

from .data import Dataset
from .errors import PipelineError, last_line
from .spec import Spec

__all__ = ["check_curriculum", "check_models", "check_views"]


def check_models(spec: Spec, data: Dataset) -> None:
    """Build teacher and student (at `student.width`) and run two samples through each on the CPU, before
    any Ray work, so a model that cannot take the data fails here with its spec field named, not inside a
    trial. Only the spec's own student is built: searched `model`/`width` values are the spec's to check."""
    import torch

    from .models import build_model

    x = torch.as_tensor(np.array(data.train.x[:2]), dtype=torch.float32) * data.scale
    # A teacher given as precomputed logits is never built (teacher.model is not used).
    roles = ("student",) if spec.teacher.source == "logits" else ("teacher", "student")
    for role in roles:
        model_name = getattr(spec, role).model
        width = spec.student.width if role == "student" else 1.0  # the teacher has no width
        try:
            model = build_model(
                model_name, data.num_outputs, data.input_shape, data.mean, data.std, False, width=width
            ).eval()
            with torch.no_grad():
                out = model(x)
        except (ValueError, RuntimeError) as e:
            raise PipelineError(
                f"{role}.model {model_name!r} cannot take the {data.name} inputs of shape {data.input_shape}: "
                f"{last_line(e)}. Choose another {role}.model in the spec"
            ) from None
        if tuple(out.shape) != (2, data.num_outputs):
            raise PipelineError(
                f"{role}.model {model_name!r} gives outputs of shape {tuple(out.shape)[1:]}, expected ({data.num_outputs},)"
            )


def check_curriculum(spec: Spec, data: Dataset) -> None:
    if spec.teacher.curriculum.pacing != "none" and data.train.difficulty is None:
        raise PipelineError(
            f"teacher.curriculum.pacing is {spec.teacher.curriculum.pacing!r} but the {data.name} data grade no "
            "sample's difficulty (no annotator agreement); set teacher.curriculum.pacing: none (the student's "
            "curriculum can use the teacher's loss instead)"
        )


def check_views(spec: Spec, data: Dataset) -> None:
    """`teacher_logits: views` needs images (C, H, W): flat inputs have no flips or turns."""
    if spec.teacher_logits == "views" and len(data.input_shape) != 3:
        raise PipelineError(
            f"teacher_logits: views caches the teacher's logits of each image's flips and turns, but the {data.name} "
            f"inputs have shape {data.input_shape}, not images (C, H, W); set teacher_logits: clean"
        )
