"""The errors a user can cause or meet; the CLI prints each as one paragraph and exits with code 2
(130 for an interruption). Kept free of heavy imports so the CLI can catch them cheaply."""

__all__ = [
    "CheckpointError",
    "ExperimentLocked",
    "DataError",
    "NotAnExperiment",
    "PipelineError",
    "ResultsError",
    "SearchInterrupted",
    "UserError",
    "first_line",
    "last_line",
]


class UserError(Exception):
    """Base of every error whose `str()` is a one-paragraph message naming the file/field and the fix."""


class PipelineError(UserError):
    """A run that cannot go on; says what happened, where, and what to do."""


class DataError(UserError):
    """Data that cannot be used; names the file/row and the fix."""


class CheckpointError(UserError):
    """A checkpoint file that cannot be loaded; names it and the fix."""


class ResultsError(UserError):
    """A results file that cannot be read; names it and the fix."""


class NotAnExperiment(UserError):
    """The path is not an skd-tune experiment directory (or its files are damaged)."""


class SearchInterrupted(Exception):
    """The driver was interrupted; everything computed so far is saved and the run can resume."""


class ExperimentLocked(UserError):
    """Another driver holds the experiment; says who, since when, and what to do."""


def first_line(error: BaseException | str | None, limit: int = 300) -> str:
    """The first non-empty line of an error's text (or its type's name): the cause, for a one-paragraph message."""
    text = str(error).strip() if error is not None else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines:
        return lines[0][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else "unknown error"


def last_line(error: BaseException | str | None, limit: int = 300) -> str:
    """The last non-empty line of a (remote) traceback: the exception itself, without the stack."""
    lines = [ln.strip() for ln in str(error or "").strip().splitlines() if ln.strip()]
    if lines:
        return lines[-1][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else "unknown error"
