"""User-facing error types (every engine error derives from InfinistarError: one-line messages)
and the one check of a value against its allowed choices."""


class InfinistarError(Exception):
    """Base class for errors the CLI reports as a one-line message."""


class UnknownPresetError(InfinistarError):
    """A preset name that is not registered."""


class ScheduleError(InfinistarError):
    """A frame count / schedule configuration that cannot be served."""


class RequestError(InfinistarError, ValueError):
    """A generation request holds a value outside what the model can sample with."""


class OutputExistsError(InfinistarError):
    """The output file exists and overwriting was not asked for."""


class OutputPathError(InfinistarError):
    """The output path cannot be used: wrong suffix for the content, or an unwritable directory."""


class ConditioningError(InfinistarError):
    """A reference image/video or a conditioning option that cannot be used (also: extend's
    --seconds that is not a whole number of continuation steps)."""


class MediaError(InfinistarError):
    """A media file cannot be read: missing, unreadable, corrupt or of an unsupported kind."""


class VAEInputError(InfinistarError, ValueError):
    """A tensor handed to the video VAE has the wrong shape or frame count."""


class VAEWeightsError(InfinistarError):
    """A VAE state dict does not fit the configured architecture."""


class ModelNotDownloadedError(InfinistarError):
    """The weights of a model variant are not (completely) in the local cache."""


class DownloadError(InfinistarError):
    """The hub could not be reached, refused the request, or a transfer failed."""


class DiskSpaceError(InfinistarError):
    """Not enough free disk space for a download."""


class WeightsError(InfinistarError):
    """A checkpoint is missing, truncated, unsafe, or does not match the model."""


class WeightsMismatchError(WeightsError):
    """Checkpoint names or shapes differ from the module's."""


def check_choice(value: str, choices: tuple[str, ...], error: type[InfinistarError], what: str) -> str:
    """`value` when it is one of `choices`, else `error`("unknown <what> 'value'; choose one of ...")."""
    if value not in choices:
        raise error(f"unknown {what} {value!r}; choose one of {', '.join(choices)}.")
    return value
