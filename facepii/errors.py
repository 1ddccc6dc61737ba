"""Errors a user can cause.

Every one is a :class:`FacepiiError`; its message names the file, parameter or
name at fault and says what to do. The CLI prints the message on one line, with
no traceback, and exits with code 2.
"""

from __future__ import annotations


class FacepiiError(Exception):
    """Base class of every error caused by input (paths, names, parameters, data)."""

    exit_code = 2


class DatasetError(FacepiiError):
    """A dataset spec, folder or file cannot be used."""


class ImageError(FacepiiError):
    """One image cannot be used (unreadable, too large, no face). Counted, not fatal."""


class EncoderError(FacepiiError):
    """An encoder name, model file or embedding width is wrong."""


class ParameterError(FacepiiError):
    """A defense/attack parameter or a CLI option value is wrong."""


class UnknownNameError(FacepiiError):
    """A name that no registry knows."""


class ConfigError(FacepiiError):
    """A gate/evaluate configuration file is wrong."""


class ReportError(ConfigError):
    """A report file whose content is not what facepii writes."""
