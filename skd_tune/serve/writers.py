"""How each deployment format's artefact is written and reloaded; `formats.FORMATS` registers them.

Every writer `write_*(wrapper, example, path) -> detail` writes atomically (`skd_tune.atomic`; torch's
zips into a file object, so that their inner folder is "archive", not the temporary file's random name)
and says how the artefact was made; every loader `load_*(path) -> run` reloads it, `run(x)` giving its
(subclass logits, class logits) as tensors for a batch of [0, 1] inputs `x`, named `input`,
`subclass_logits` and `class_logits` in the TorchScript and ONNX graphs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomic
from ..errors import CheckpointError, first_line
from .artifact import StudentWithClassLogits, load_student

__all__ = [
    "INPUT_NAME",
    "ONNX_INSTALL",
    "OUTPUT_NAMES",
    "Logits",
    "load_onnx",
    "load_state_dict",
    "load_torchscript",
    "write_onnx",
    "write_state_dict",
    "write_torchscript",
]

ONNX_INSTALL = "pip install 'skd-tune[onnx]'"
INPUT_NAME = "input"
OUTPUT_NAMES = ("subclass_logits", "class_logits")

Logits = tuple[torch.Tensor, torch.Tensor]


@contextlib.contextmanager
def _quiet_jit():
    """Silence torch's 'torch.jit.* is deprecated' notices while tracing (nothing a user can act on)."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=category)
        yield


def write_state_dict(wrapper: StudentWithClassLogits, example: torch.Tensor, path: Path) -> str:
    """The bare student's `state_dict` (tensors only), re-saved with `torch.save`."""
    state = wrapper.student.state_dict()
    write_atomic(path, lambda f: torch.save(state, f))
    return "loaded with torch.load(weights_only=True) + load_student"


def load_state_dict(path: Path) -> Callable[[torch.Tensor], Logits]:
    """`load_student` of the artefact's directory (it needs the `meta.json` beside it), plus the class head."""
    reloaded, meta = load_student(path.parent)  # torch.load(..., weights_only=True) inside
    wrapper = StudentWithClassLogits(reloaded, meta["subclass_to_class"]).eval()

    def run(x: torch.Tensor) -> Logits:
        with torch.no_grad():
            return wrapper(x)

    return run


def write_torchscript(wrapper: StudentWithClassLogits, example: torch.Tensor, path: Path) -> str:
    """`wrapper` traced with `example` (`torch.jit.trace`) and saved with `torch.jit.save`."""
    with _quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example)
        write_atomic(path, lambda f: torch.jit.save(traced, f))
    return f"torch.jit.trace with N={len(example)}"


def load_torchscript(path: Path) -> Callable[[torch.Tensor], Logits]:
    """`torch.jit.load` on the CPU."""
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: torch.Tensor) -> Logits:
        with _quiet_jit(), torch.no_grad():
            return module(x)

    return run


def _onnx_dynamo(wrapper: StudentWithClassLogits, example: torch.Tensor, path: str) -> None:
    """The `torch.export`-based exporter (uses onnxscript), with a dynamic batch axis."""
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        dynamo=True,
        verbose=False,
        external_data=False,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )


def _onnx_legacy(wrapper: StudentWithClassLogits, example: torch.Tensor, path: str) -> None:
    """The TorchScript-based exporter torch still ships, with a dynamic batch axis."""
    with warnings.catch_warnings():
        # Its deprecation notice: we use it only when the torch.export-based exporter failed (reported).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
        )


def write_onnx(wrapper: StudentWithClassLogits, example: torch.Tensor, path: Path) -> str:
    """One .onnx file, weights inside, by the `torch.export`-based exporter, or by the legacy one only if that
    fails; `CheckpointError` when neither can export the model. The detail names the exporter and opset."""
    import onnx

    how = "torch.onnx.export(dynamo=True)"

    def write(tmp: str) -> None:
        nonlocal how
        try:
            _onnx_dynamo(wrapper, example, tmp)
        except (ImportError, torch.onnx.errors.OnnxExporterError) as e:  # onnxscript missing, or an unsupported op
            dynamo_error = first_line(e)
            try:
                _onnx_legacy(wrapper, example, tmp)
            except (ImportError, RuntimeError, ValueError, TypeError) as legacy:  # OnnxExporterError: a RuntimeError
                raise CheckpointError(
                    f"{path}: the model cannot be exported to ONNX by torch {torch.__version__} (torch.export-based "
                    f"exporter: {dynamo_error}; legacy exporter: {first_line(legacy)}). Export the other formats with "
                    "--formats state_dict,torchscript"
                ) from None
            how = f"legacy torch.onnx.export(dynamo=False), as dynamo=True failed: {dynamo_error}"

    write_atomic(path, write, to_path=True)
    opsets = {
        imp.domain or "ai.onnx": imp.version for imp in onnx.load(str(path), load_external_data=False).opset_import
    }
    return f"{how}, opset {opsets.get('ai.onnx', '?')}"


def _ort_errors(ort) -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes (they derive from Exception directly, not from RuntimeError)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    names = (
        "Fail",
        "InvalidArgument",
        "NoSuchFile",
        "NoModel",
        "EngineError",
        "RuntimeException",
        "InvalidProtobuf",
        "ModelLoaded",
        "NotImplemented",
        "InvalidGraph",
        "EPFail",
    )
    found = tuple(
        c for c in (getattr(state, n, None) for n in names) if isinstance(c, type) and issubclass(c, BaseException)
    )
    return found + (RuntimeError, ValueError)


def load_onnx(path: Path) -> Callable[[torch.Tensor], Logits]:
    """An onnxruntime CPU session; an artefact it cannot load or run is removed (`CheckpointError`)."""
    import onnxruntime as ort

    errors = _ort_errors(ort)

    def unusable(e: BaseException) -> CheckpointError:
        path.unlink(missing_ok=True)
        return CheckpointError(
            f"{path}: onnxruntime {getattr(ort, '__version__', '')} cannot run the exported model ({first_line(e)}), "
            "so it was removed. Export the other formats with --formats state_dict,torchscript, or try another "
            f"onnxruntime version ({ONNX_INSTALL})"
        )

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except errors as e:
        raise unusable(e) from None

    def run(x: torch.Tensor) -> Logits:
        try:
            outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        except errors as e:
            raise unusable(e) from None
        return tuple(torch.from_numpy(np.asarray(o)) for o in outputs)

    return run
