"""Validation shared by the loaders and ``find3d check-data``.

Every check reports to a ``Reporter``. A strict reporter (what the loaders use by default) raises
``DataError`` on the first problem; a collecting reporter (what ``check-data`` uses) records every
problem and lets the loader skip the bad entry, so both paths run exactly the same checks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from find3d.errors import DataError


@dataclass(frozen=True)
class Problem:
    """One problem in a dataset file: which file, which entry, what is wrong and how to fix it."""

    file: str
    entry: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.entry}: {self.message}"


@dataclass
class Reporter:
    """Receives problems: raises on the first one (``collect=False``) or records them all."""

    collect: bool = False
    problems: list[Problem] = field(default_factory=list)

    def report(self, file: str | os.PathLike, entry: str, message: str) -> None:
        problem = Problem(str(file), entry, message)
        if not self.collect:
            raise DataError(str(problem))
        self.problems.append(problem)


def strict() -> Reporter:
    """A reporter that raises ``DataError`` on the first problem (the loaders' default)."""
    return Reporter(collect=False)


def has_keys(entry: Any, keys: Iterable[str], file: str | os.PathLike, where: str, reporter: Reporter) -> bool:
    """Report (and return False) when ``entry`` is not a mapping holding every key in ``keys``."""
    if not isinstance(entry, Mapping):
        reporter.report(file, where, f"expected an object, got {type(entry).__name__}; fix or regenerate the file.")
        return False
    missing = [key for key in keys if key not in entry]
    if missing:
        reporter.report(
            file, where, f"missing key(s) {missing}; add them (see the official format) or regenerate the file."
        )
        return False
    return True


def list_of(payload: Any, key: str, file: str | os.PathLike, reporter: Reporter) -> list[Any]:
    """``payload[key]`` as a list; a missing key or a non-list value is reported and yields ``[]``."""
    if not isinstance(payload, Mapping) or key not in payload:
        reporter.report(file, f"top level '{key}'", f"missing list '{key}'; the file is not in the expected format.")
        return []
    value = payload[key]
    if not isinstance(value, list):
        reporter.report(file, f"top level '{key}'", f"'{key}' must be a list, got {type(value).__name__}.")
        return []
    return value


def image_exists(path: str | os.PathLike, file: str | os.PathLike, where: str, reporter: Reporter) -> bool:
    """Report a referenced image (or PNG) that is not on disk."""
    if os.path.isfile(path):
        return True
    reporter.report(
        file, where, f"image file {path} not found; copy it there or remove the entry (re-download or regenerate)."
    )
    return False


@contextlib.contextmanager
def guard(file: str | os.PathLike, where: str, reporter: Reporter) -> Iterator[None]:
    """Report a value of the wrong type inside one entry (e.g. ``"image_id": "abc"``) as a problem."""
    try:
        yield
    except DataError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        reporter.report(file, where, f"malformed value ({type(err).__name__}: {err}); fix the entry.")
