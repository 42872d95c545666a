"""YAML configs validated into typed dataclasses.

Every config class is a (nested) dataclass whose fields carry their documentation once, in
``field(metadata={"help": ...})``. ``load_config`` reads YAML, applies ``key.sub=value``
overrides from the command line, rejects unknown keys (listing the valid ones) and checks types.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from find3d import validate
from find3d.errors import ConfigError

T = TypeVar("T")


def doc(help_text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING,
        minimum: float | None = None, maximum: float | None = None) -> Any:
    """A dataclass field with its documentation (``help``) and optional bounds attached.

    ``minimum`` / ``maximum`` (inclusive) are checked by ``from_dict`` / ``load_config`` for numbers, so a
    config with e.g. ``max_steps: 0`` fails before any work starts; ``None`` values pass.
    """
    kwargs: dict[str, Any] = {"metadata": {"help": help_text, "minimum": minimum, "maximum": maximum}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if factory is not dataclasses.MISSING:
        kwargs["default_factory"] = factory
    return dataclasses.field(**kwargs)


def _fail(where: str, problem: str, key: str | None = None) -> ConfigError:
    """A ConfigError about key path ``where``; its ``key`` (default ``where``) stays on the error, so that
    ``load_config`` can name the source of the value: an override or the YAML file."""
    err = ConfigError(f"{where}: {problem}" if where else problem)
    err.key = where if key is None else key  # type: ignore[attr-defined]
    return err


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if errors else _fail(where, f"invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise _fail(where, f"{value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _fail(where, f"expected a mapping for {hint.__name__}, got {type(value).__name__}")
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        item = args[0] if args else Any
        if isinstance(value, str) and item is str and origin is list:
            value = validate.strings(value, where)  # one string is a list of one, never its characters
        if not isinstance(value, (list, tuple)):
            raise _fail(where, f"expected a list, got {value!r}")
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, f"expected a mapping, got {value!r}")
        return {k: _coerce(v, args[1] if args else Any, _key(where, k)) for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, f"expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, f"expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(where, f"expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _fail(where, f"expected a string, got {value!r}")
        return value
    if hint is Path:
        return Path(os.path.expanduser(str(value)))
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys, wrong types and out-of-bound values.

    A class may check relations between its fields in ``__post_init__`` by raising ``ConfigError``;
    the message is prefixed with the section's key path here.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _fail(where, f"unknown key(s) {unknown}; valid keys are {sorted(fields)}", key=_key(where, unknown[0]))
    kwargs = {name: _coerce(value, hints[name], _key(where, name)) for name, value in data.items()}
    for name, value in kwargs.items():
        _check_bounds(value, fields[name], _key(where, name))
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _fail(where, f"required key(s) {missing} are missing")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if getattr(err, "key", None) is not None:
            raise
        raise _fail(where, str(err)) from None


def _check_bounds(value: Any, f: dataclasses.Field, where: str) -> None:
    low, high = f.metadata.get("minimum"), f.metadata.get("maximum")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if low is not None and high is not None else (
            f">= {low:g}" if low is not None else f"<= {high:g}")
        raise _fail(where, f"{value!r} is out of range; it must be {bounds} ({f.metadata.get('help', '')})")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-YAML-friendly mapping of a config dataclass (paths become strings)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return convert(dataclasses.asdict(config))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested mapping in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. max_steps=200 or interface.num_layers=4")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Read ``path`` (YAML, optional) into ``cls`` after applying ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config {path}: file not found; see configs/ for the shipped configs")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config {path}: invalid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"config {path}: the top level must be a mapping")
    overrides = list(overrides or [])
    apply_overrides(data, overrides)
    try:
        return from_dict(cls, data, where="")
    except ConfigError as err:
        raise ConfigError(f"{_source(getattr(err, 'key', ''), overrides, path)}: {err}") from None


def _source(key: str, overrides: list[str], path: Path | None) -> str:
    """Where the value at ``key`` came from: the command-line override(s) that set it (or part of it), else
    the YAML file, else the defaults."""
    mine = [o for o in overrides
            if (k := o.partition("=")[0]) == key or k.startswith(f"{key}.") or key.startswith(f"{k}.")]
    if mine:
        return "override " + ", ".join(mine) + (f" (on top of config {path})" if path is not None else "")
    return f"config {path}" if path is not None else "config defaults"


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, nested sections flattened with dots."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe(hints[f.name], key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "<required>")
        shown = str(default) if isinstance(default, Path) else repr(default)
        rows.append((key, shown, f.metadata.get("help", "")))
    return rows
