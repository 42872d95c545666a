"""Validation of direct arguments, shared by the Python API and the command line.

One place decides what a ``str | Sequence[str]`` argument, a count, a probability, a path or a
device means, so every entry point accepts the same values and rejects the rest with the same
``InputError`` naming the argument and what it takes:

- ``strings``: a single string is ONE item (never its characters), any other iterable a list;
- ``integer`` / ``number``: real numbers only (no bools, no numeric strings) within bounds;
- ``path``: a ``str`` or ``os.PathLike``;
- ``device``: 'auto', 'cpu' or 'cuda[:i]', refused up front when this torch cannot use it.

``cli(check, ...)`` turns a check into an argparse ``type=``, so a bad flag is one argparse error
line (exit 2) before any work starts.
"""

from __future__ import annotations

import argparse
import numbers
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from find3d.errors import InputError

if TYPE_CHECKING:
    import torch


def strings(value: Any, name: str, allow_empty: bool = False) -> list[str]:
    """A list of non-blank strings from one string (one item) or an iterable of strings."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        raise InputError(f"{_at(name)}got {type(value).__name__} {value!r}; pass a string or a list of strings, "
                         "e.g. 'a red mug' or ['a red mug', 'the duck']")
    else:
        items = list(value)
    if not items and not allow_empty:
        raise InputError(f"{_at(name)}got an empty list; pass at least one non-empty string")
    bad = [item for item in items if not isinstance(item, str) or not item.strip()]
    if bad:
        raise InputError(f"{_at(name)}{bad[0]!r} is not a non-empty string; pass text such as 'a red mug'")
    return items


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An ``int`` (not a bool, not a string) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{_at(name)}got {type(value).__name__} {value!r}; pass an integer{_bounds(minimum, maximum)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InputError(f"{_at(name)}got {value}; pass an integer{_bounds(minimum, maximum)}")
    return value


def number(value: Any, name: str, low: float | None = None, high: float | None = None) -> float:
    """A real number (not a bool, not a string, not NaN) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise InputError(f"{_at(name)}got {type(value).__name__} {value!r}; pass a number{_bounds(low, high)}")
    value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{_at(name)}got {value:g}; pass a number{_bounds(low, high)}")
    return value


def path(value: Any, name: str) -> Path:
    """A ``Path`` from a ``str`` / ``os.PathLike``; anything else (None, a number) is refused."""
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return Path(value)
    raise InputError(f"{_at(name)}got {type(value).__name__} {value!r}; pass a file or folder path (str or Path)")


def device(value: Any, name: str = "device") -> torch.device:
    """'auto' (CUDA when available), 'cpu' or 'cuda[:i]'; CUDA on a torch without it is refused here."""
    import torch

    if isinstance(value, str) and value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"{_at(name)}unknown device {value!r}; use 'auto', 'cpu' or 'cuda[:i]'") from err
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"{_at(name)}device {value!r} is not supported; use 'auto', 'cpu' or 'cuda[:i]'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA device is visible"
            raise InputError(f"{_at(name)}{value!r} asks for CUDA but {build}; use 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"{_at(name)}{value!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                             f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return resolved


def cli(check: Callable[..., Any], **bounds: Any) -> Callable[[str], Any]:
    """An argparse ``type=`` running ``check`` (``integer`` / ``number`` / ``device``) on the flag's text."""
    parse = {integer: int, number: float}.get(check, str)

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if parse is int else 'a number'}{_bounds(*bounds.values())}"
            ) from None
        try:
            return check(value, "", **bounds)  # argparse names the flag
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = check.__name__  # argparse names the type in its messages
    return convert


def _at(name: str) -> str:
    return f"{name}: " if name else ""


def _bounds(low: Any = None, high: Any = None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""
