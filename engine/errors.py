"""User-facing errors. The CLI prints `str(error)` as a one-line message and exits non-zero."""


class InfinistarError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""


class ModelNotDownloadedError(InfinistarError):
    """The weights of a model variant are not (completely) in the local cache."""


class DownloadError(InfinistarError):
    """The hub could not be reached, refused the request, or a transfer failed."""


class DiskSpaceError(InfinistarError):
    """Not enough free disk space for a download."""


class WeightsError(InfinistarError):
    """A checkpoint is missing, truncated, unsafe, or does not match the model."""
