"""User-facing errors. The CLI prints `str(error)` as a one-line message and exits non-zero."""


class InfinistarError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""


class VAEInputError(InfinistarError, ValueError):
    """A tensor handed to the video VAE has the wrong shape or frame count."""


class VAEWeightsError(InfinistarError):
    """A VAE state dict does not fit the configured architecture."""
