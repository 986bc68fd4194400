"""The closed sets of names a spec may use, importing nothing: the spec validates against these.

Each set has a registry that holds its behaviour, keyed by exactly these names (tests/test_names.py
checks that they agree): models -> `models.MODELS`, data sources -> `data.SOURCES`, pacing functions ->
`curriculum.PACING`, samplers and schedulers -> `tune.search.SAMPLERS` / `SCHEDULERS`, export formats
-> `serve.FORMATS`. Keeping the names here lets `spec.py` validate without importing torch, Ray or the
data loaders, and breaks the import circle between the spec and those modules.
"""

from __future__ import annotations

__all__ = [
    "COST_METRICS",
    "EXPORT_FORMATS",
    "INVENTED",
    "METRICS",
    "MODELS",
    "OBJECTIVE_METRICS",
    "PACINGS",
    "SAMPLERS",
    "SCHEDULERS",
    "SOURCES",
    "WIDTH_MODELS",
]

MODELS = (
    "mlp_tiny",
    "mlp",
    "cnn_tiny",
    "cnn_small",
    "cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
)
# The models whose channels or hidden units `student.width` may scale (width != 1): models.MODELS builds
# them with a width; the others (ResNets, EfficientNet) take only width 1.
WIDTH_MODELS = ("mlp_tiny", "mlp", "cnn_tiny", "cnn_small", "cnn", "mobilenet_v3_small", "mobilenet_v3_large")
# source -> (whether it reads files under data.root, its subclass schemes; the first is the default)
SOURCES: dict[str, tuple[bool, tuple[str, ...]]] = {
    "digits": (False, ("known",)),
    "npz": (True, ("known",)),
    "mhist": (True, ("agreement", "unanimous")),
}
INVENTED = "invented"  # a scheme every source has: the teacher invents the subclasses
PACINGS = ("none", "linear", "root", "step", "exponential", "levels")
# nsga2: Optuna's NSGA-II, for `search.objectives` only; cmaes: a single objective only (spec/objectives.py)
SAMPLERS = ("tpe", "cmaes", "random", "nsga2")
SCHEDULERS = ("asha", "fifo")
METRICS = ("val_f1", "val_accuracy", "val_auc", "val_loss")
# What a student costs, measured once per trial (cost.py) and written to trials.parquet: parameter count,
# multiply-accumulates of one forward pass of one input, median inference latency (ms) at batch 1 and
# 64 on the trial's device with its threads, and the bytes of its saved weights.
COST_METRICS = ("params", "macs", "latency_ms_b1", "latency_ms_b64", "weights_bytes")
# What `search.objectives` may name: a validation metric or a cost.
OBJECTIVE_METRICS = (*METRICS, *COST_METRICS)
EXPORT_FORMATS = ("state_dict", "torchscript", "onnx")
