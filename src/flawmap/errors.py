"""Exceptions raised by flawmap for user errors (bad input, misuse); never ``assert``."""

from __future__ import annotations


class FlawmapError(Exception):
    """Base class of every error flawmap raises on purpose."""


class DataError(FlawmapError, ValueError):
    """A data folder, image or mask cannot be used; the message names the file or folder."""


class ConfigError(FlawmapError, ValueError):
    """A model, backbone or CLI option has a value flawmap cannot use."""


class NotFittedError(FlawmapError, RuntimeError):
    """A detector was used (predict, save, ...) before ``fit``."""


class WeightsError(FlawmapError, RuntimeError):
    """Backbone weights could not be found; the message lists the offline options."""


class FlawmapWarning(UserWarning):
    """Something flawmap accepted but the user should know about (names the file or value)."""
