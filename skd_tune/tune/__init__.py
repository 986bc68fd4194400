"""The only Ray layer: Ray start-up and resource checks, the Tune stage skeleton, its callbacks and
signal handling, the sampler and scheduler registries, and the trainables.

Importing this package imports Ray; the stages import it only when they run.
"""

from .cluster import check_resources, init_ray
from .search import SAMPLERS, SCHEDULERS, make_searcher
from .signals import Interruption
from .stage import TuneStage, run_tune_stage, trial_id_of

__all__ = [
    "SAMPLERS",
    "SCHEDULERS",
    "Interruption",
    "TuneStage",
    "check_resources",
    "init_ray",
    "make_searcher",
    "run_tune_stage",
    "trial_id_of",
]
