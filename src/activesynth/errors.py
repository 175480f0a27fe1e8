"""One exception family for the whole package.

Every message names the file, option or value at fault and, where there is one, what would fix it.
"""

from __future__ import annotations


class ActivesynthError(Exception):
    """Base class of every error activesynth raises on purpose."""


class DataError(ActivesynthError):
    """Missing, corrupt or inconsistent data (files, arrays, masks, labels, splits)."""


class ConfigError(ActivesynthError):
    """An unknown name, an out-of-range option or an inconsistent configuration."""


class CheckpointError(ActivesynthError):
    """A checkpoint that is missing, corrupt, or does not match the model or data it is used with."""
