"""User-facing error types. Every engine error derives from InfinistarError (one-line messages)."""


class InfinistarError(Exception):
    """Base class for errors the CLI reports as a one-line message."""


class UnknownPresetError(InfinistarError):
    """A preset name that is not registered."""


class ScheduleError(InfinistarError):
    """A frame count / schedule configuration that cannot be served."""
