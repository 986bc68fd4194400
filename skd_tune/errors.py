"""Errors the CLI turns into one paragraph and an exit code (kept free of Ray and torch imports)."""

__all__ = ["PipelineError", "SearchInterrupted"]


class PipelineError(Exception):
    """A run that cannot go on; `str()` says what happened, where, and what to do."""


class SearchInterrupted(Exception):
    """The driver was interrupted; everything computed so far is saved and the run can resume."""
