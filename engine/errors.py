"""User-facing errors. The CLI prints `str(error)` as a one-line message and exits non-zero."""


class InfinistarError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""
