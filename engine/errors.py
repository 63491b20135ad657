"""User-facing errors. The CLI prints `str(error)` as a one-line message and exits non-zero."""


class InfinistarError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""


class OutputExistsError(InfinistarError):
    """The output file exists and overwriting was not asked for."""


class OutputPathError(InfinistarError):
    """The output path cannot be used: wrong suffix for the content, or an unwritable directory."""


class MediaError(InfinistarError):
    """A media file cannot be read: missing, unreadable, corrupt or of an unsupported kind."""
