"""Exception types raised by depthdistill, one per failure family.

Every exception derives from :class:`DepthDistillError` and from the built-in type a caller would
naturally catch (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so existing ``except``
clauses keep working.
"""

from __future__ import annotations

__all__ = ["DepthDistillError", "DepthError", "DatasetError", "ConfigError", "ConfigTypeError", "MissingFileError",
           "TrainingError", "CheckpointError", "DepthUnitsWarning"]


class DepthDistillError(Exception):
    """Base class of every error raised by depthdistill."""


class DepthError(DepthDistillError, ValueError):
    """Depth is missing, of the wrong shape, or does not match the features it is used with."""


class DatasetError(DepthDistillError, ValueError):
    """A dataset path, file or sample is missing, unreadable or inconsistent."""


class ConfigError(DepthDistillError, ValueError):
    """A configuration value (YAML key, argument) is unknown or out of range."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument has the wrong type (a module where a loss is expected, a string where a model is); a
    :class:`ConfigError` that is also a ``TypeError``."""


class MissingFileError(DepthDistillError, FileNotFoundError):
    """A file the library was asked to read (a run file, a checkpoint, an image) does not exist."""


class TrainingError(DepthDistillError, RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


class CheckpointError(TrainingError):
    """A checkpoint file is unreadable or corrupt (its content does not match the checksum written with it)."""


class DepthUnitsWarning(UserWarning):
    """Depth given to :func:`~depthdistill.depth_context` does not look like metres (millimetres, most often).

    A warning rather than an error there, issued once per process; filter it with
    ``warnings.filterwarnings("ignore", category=DepthUnitsWarning)``. The data checks raise a :class:`DepthError`
    instead.
    """
