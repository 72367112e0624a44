"""Exception types raised by `core`. Every message names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class SlicewiseError(Exception):
    """Base class of every error `core` raises on purpose."""


class VolumeError(SlicewiseError, ValueError):
    """A Volume was constructed from inconsistent values."""


class VolumeReadError(SlicewiseError):
    """A file or folder could not be read as an image or volume."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsupportedFormatError(VolumeReadError):
    """No reader accepted the path; `reasons` maps reader name to why it refused."""

    def __init__(self, path: str | Path, reasons: dict[str, str]) -> None:
        self.reasons = dict(reasons)
        lines = "; ".join(f"{name}: {why}" for name, why in reasons.items())
        super().__init__(path, f"no reader could open it ({lines})")


class AnnotationFormatError(SlicewiseError):
    """The annotation CSV is malformed; the message names the file and the line."""


class TrainingDataError(SlicewiseError):
    """A training data set is missing, empty or inconsistent."""


class CheckpointError(SlicewiseError):
    """A checkpoint file cannot be loaded or does not describe its model."""


class JobError(SlicewiseError):
    """A background job cannot be submitted, found, cancelled or resumed."""
