"""The experiment spec: pydantic models of the YAML, loaded and validated once at the edge.

Every mistake in a spec is reported in one pass, each with its dotted path, what is wrong, the bad
value and (where there is a closed set) the valid choices, e.g.::

    student.temperature: must be > 0, got -1

`load_spec(path)` reads a YAML file and `parse_spec(text)` / `validate_spec(raw)` validate it; each
returns a `Spec` or raises `SpecError`, whose `str()` is the one-paragraph message the CLI prints
before exiting with code 2. Pure: no downloads, no experiment lookup (experiment/ resolves a directory
or a URI to its frozen spec), no check of the file system (whether `data.root` exists is the data
loader's question), and nothing heavy imported: the names a spec may use come from `names.py`.
"""

from ..names import INVENTED, SAMPLERS, SCHEDULERS
from . import models, space, teacher_source, validation
from .models import *  # noqa: F403 - the models' public names, listed in models.__all__
from .space import *  # noqa: F403
from .teacher_source import *  # noqa: F403
from .validation import *  # noqa: F403

__all__ = [
    *models.__all__,
    *space.__all__,
    *teacher_source.__all__,
    *validation.__all__,
    "INVENTED",
    "SAMPLERS",
    "SCHEDULERS",
]
