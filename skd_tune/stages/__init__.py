"""The pipeline as a declared list of stages, run in order and skipped when done.

    teacher (Ray Tune) -> teacher_logits (Ray task, or the driver) -> student search (Ray Tune + Optuna
    + ASHA) -> export -> search_kd, search_nokd (the same search for KD and no-KD, with methods.search:
    per_method) -> methods (the no-KD / KD / SKD table: Ray Tune, one trial per method and seed)

Each stage is a `Stage` (base.py); `pipeline.run` loops over `PIPELINE`. Importing this package is
light: a stage imports torch and the Ray layer only when it runs.
"""

from .base import Context, Stage
from .export import ExportStage
from .methods import MethodsStage
from .student import MethodSearchStage, StudentStage
from .teacher import TeacherStage
from .teacher_logits import TeacherLogitsStage

PIPELINE: tuple[Stage, ...] = (
    TeacherStage(),
    TeacherLogitsStage(),
    StudentStage(),
    ExportStage(),
    MethodSearchStage("search_kd", "KD"),
    MethodSearchStage("search_nokd", "no-KD"),
    MethodsStage(),
)
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in PIPELINE)

__all__ = ["PIPELINE", "STAGE_NAMES", "Context", "Stage"]
