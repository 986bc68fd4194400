"""`teacher.source: checkpoint`: a TorchScript teacher or a state_dict of a registry model, loaded and run
on every split (plain torch: no Ray); and `save_teacher`, which writes either kind (`skd-tune teacher`).
The file format is in loaded.py's docstring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Dataset, class_view
from ..errors import CheckpointError, first_line
from ..models import build_model, capture_embeddings
from ..spec import Spec
from .loaded import TeacherOutputs, check_width, file_sha256, resolve_path
from .order import SPLITS

__all__ = ["load_checkpoint", "load_checkpoint_outputs", "predict_outputs", "save_teacher"]


def _registry_model(spec: Spec, data: Dataset, state: Any, path: Path) -> nn.Module:
    """The registry model `teacher.model` for the teacher's outputs, with the state_dict `state` loaded."""
    view = class_view(data)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["best"]["model"] if isinstance(state.get("best"), dict) else state["model"]  # a checkpoint
    model = build_model(spec.teacher.model, view.num_outputs, data.input_shape, data.mean, data.std)
    errors = []
    for target in (model, model[1]):  # with the normalisation layer, or the bare network
        try:
            target.load_state_dict(state)
            return model
        except (RuntimeError, TypeError, AttributeError) as e:
            errors.append(first_line(e, 400))
    raise CheckpointError(
        f"{path}: neither a TorchScript file nor a state_dict of teacher.model {spec.teacher.model!r} with "
        f"{view.num_outputs} outputs (the teacher's outputs for {data.name}): {errors[0]}; set teacher.model to "
        "the registry model it was saved from, or save the teacher with torch.jit.save"
    )


def load_checkpoint(spec: Spec, data: Dataset) -> tuple[nn.Module, str, Path]:
    """(the teacher, "torchscript" or "state_dict", its file), on the CPU, in eval mode."""
    path = resolve_path(spec, "file")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval(), "torchscript", path
    except (RuntimeError, ValueError):
        pass  # not TorchScript: a state_dict
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is neither
        raise CheckpointError(
            f"{path}: neither a TorchScript file nor a state_dict readable with torch.load(weights_only=True) "
            f"({first_line(e)}); save the teacher with torch.jit.save, or its state_dict with torch.save"
        ) from None
    return _registry_model(spec, data, state, path).eval(), "state_dict", path


@torch.no_grad()
def predict_outputs(
    model: nn.Module, x: np.ndarray, scale: float, device: torch.device, embed: bool, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits (N, W), embeddings (N, D) or None) of the inputs `x` (raw; times `scale` in [0, 1]). A model
    that returns a pair gives its own embeddings; a registry model (`embed`) its last Linear's input."""
    logits, embs = [], []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.asarray(x[start : start + batch_size]), dtype=torch.float32).to(device) * scale
        if embed and not isinstance(model, torch.jit.ScriptModule):
            with capture_embeddings(model) as captured:
                out = model(xb)
            out = (out, captured[-1])
        else:
            out = model(xb)
        if isinstance(out, (tuple, list)):
            logits.append(out[0].float().cpu())
            embs.append(out[1].float().reshape(len(xb), -1).cpu())
        else:
            logits.append(out.float().cpu())
    z = torch.cat(logits).numpy()
    return z, (torch.cat(embs).numpy() if embs else None)


def load_checkpoint_outputs(spec: Spec, data: Dataset, device: torch.device | None = None) -> TeacherOutputs:
    """The checkpoint teacher's logits (and, for clustered subclasses, embeddings) of every split, checked."""
    from ..train import pick_device, set_threads

    set_threads(spec.teacher.resources.cpu)
    device = device or pick_device()
    model, kind, path = load_checkpoint(spec, data)
    model = model.to(device)
    logits, embeddings = {}, {}
    for name in SPLITS:
        logits[name], emb = predict_outputs(model, data.split(name).x, data.scale, device, data.clustered)
        check_width(str(path), logits[name].shape[1], data, spec.teacher.outputs)
        if data.clustered:
            if emb is None:
                raise CheckpointError(
                    f"{path}: this TorchScript teacher returns its logits only, but data.subclasses: clustered needs "
                    "its penultimate embeddings: return (logits, embeddings) from its forward, save a state_dict of a "
                    "registry model instead, or give precomputed logits with their embeddings (teacher.source: logits)"
                )
            embeddings[name] = emb
    record = {"source": "checkpoint", "path": str(path), "format": kind, "sha256": file_sha256(path)}
    return TeacherOutputs(logits, embeddings or None, record)


class _WithEmbeddings(nn.Module):
    """A registry model that returns (logits, its penultimate embedding), for tracing to TorchScript."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with capture_embeddings(self.model) as captured:
            logits = self.model(x)
        return logits, captured[-1]


def save_teacher(model: nn.Module, data: Dataset, out: str | Path, fmt: str) -> Path:
    """Write a registry-model teacher as a state_dict, or as TorchScript returning (logits, embeddings)."""
    from ..atomic import write_atomic

    model = model.cpu().eval()
    if fmt == "state_dict":
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return write_atomic(out, lambda f: torch.save(state, f))
    example = torch.as_tensor(np.asarray(data.train.x[:2]), dtype=torch.float32) * data.scale
    traced = torch.jit.trace(_WithEmbeddings(model), example, check_trace=False)
    return write_atomic(out, lambda f: torch.jit.save(traced, f))
