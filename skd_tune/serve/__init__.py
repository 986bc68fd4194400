"""The exported student and what is served from it, with no Ray and no pickled code.

- `artifact`: the export itself (`model.pt` + `meta.json`): `export_student` (the pipeline's export
  stage), `load_student`, `check_export_dir`, `predict`, `evaluate_exported`.
- `formats`: deployment artefacts, one per entry of the registry `FORMATS` (state_dict, TorchScript,
  ONNX), each reloaded and checked against the PyTorch model: `export_artifacts` (`skd-tune export`);
  `writers` holds how each format is written and reloaded.
- `predictions`: predictions for image, `.npy` and `.csv` files: `predict_inputs` (`skd-tune predict`).
"""

from .artifact import (
    META_KEYS,
    StudentWithClassLogits,
    check_export_dir,
    evaluate_exported,
    export_student,
    is_export_dir,
    load_student,
    predict,
    probabilities,
    resolve_export_dir,
    set_test_metrics,
)
from .formats import (
    CHECK_BATCH,
    FORMATS,
    ONNX_INSTALL,
    TRACE_BATCH,
    ArtifactCheck,
    ExportFormat,
    export_artifacts,
    format_export,
)
from .predictions import IMAGE_EXTENSIONS, Prediction, format_predictions, predict_inputs

__all__ = [
    "CHECK_BATCH",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "META_KEYS",
    "ONNX_INSTALL",
    "TRACE_BATCH",
    "ArtifactCheck",
    "ExportFormat",
    "Prediction",
    "StudentWithClassLogits",
    "check_export_dir",
    "evaluate_exported",
    "export_artifacts",
    "export_student",
    "format_export",
    "format_predictions",
    "is_export_dir",
    "load_student",
    "predict",
    "predict_inputs",
    "probabilities",
    "resolve_export_dir",
    "set_test_metrics",
]
