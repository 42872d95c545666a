"""User-facing errors.

Every error a user can cause (bad file, bad name, bad shape, empty query) is raised as a
``Find3dError`` whose message names the problem *and* the fix. The CLI prints these without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class Find3dError(Exception):
    """Base class: a problem with the user's input or environment, with a message naming the fix."""


class ConfigError(Find3dError, ValueError):
    """A configuration file or ``key=value`` override is invalid."""


class DataError(Find3dError, ValueError):
    """A dataset file is missing, malformed, or inconsistent (the message names file and entry)."""


class InputError(Find3dError, ValueError):
    """A direct input (image, tensor, text, query) is unusable."""


class ModelError(Find3dError, LookupError):
    """A model name, path or checkpoint cannot be resolved or loaded."""


class Find3dWarning(UserWarning):
    """Something the user should know about their input that does not stop the work (e.g. truncated text);
    the CLI prints it as one ``warning:`` line."""
