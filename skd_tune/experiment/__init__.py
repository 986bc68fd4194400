"""The experiment directory: the only package that knows its files.

`Experiment` (paths, state, results tables, cached logits, export and report places, on a local disk
or a URI storage), `prepare` / `frozen_spec` / `resolve_spec` (the frozen spec), `hold` (one driver per
experiment), `ResultsTables` with the only `best_trial` and `trial_counts`, and the local Ray processes
of a killed driver (`record_local_ray`, `stop_orphans`).
"""

from .experiment import Experiment
from .frozen import frozen_spec, location_of, prepare, resolve_spec
from .lock import hold
from .processes import clear_local_ray, record_local_ray, stop_orphans
from .results import STATUSES, ResultsTables, best_trial, read_table, trial_counts, write_table_atomic
from .state import State
from .storage import is_uri, join

__all__ = [
    "STATUSES",
    "Experiment",
    "ResultsTables",
    "State",
    "best_trial",
    "clear_local_ray",
    "frozen_spec",
    "hold",
    "is_uri",
    "join",
    "location_of",
    "prepare",
    "read_table",
    "record_local_ray",
    "resolve_spec",
    "stop_orphans",
    "trial_counts",
    "write_table_atomic",
]
