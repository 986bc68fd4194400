"""The errors a user can cause or meet; the CLI prints each as one paragraph and exits with code 2
(130 for an interruption). Kept free of heavy imports so the CLI can catch them cheaply."""

__all__ = [
    "CheckpointError",
    "DataError",
    "NotAnExperiment",
    "PipelineError",
    "ResultsError",
    "SearchInterrupted",
    "UserError",
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
