"""ROS 2 parameters declared from a dataclass: one place documents each parameter once.

A node's parameters are a dataclass whose fields are made with ``parameter(...)``: default,
description, whether it may change at run time, and its range. ``declare(node, cls)`` declares every
field with a ``ParameterDescriptor`` (so ``ros2 param describe`` shows the description, type, range
and read-only flag) and returns the values as the dataclass; ``update(config, parameters)`` applies
live changes (rclpy itself refuses read-only and out-of-range values).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def parameter(description: str, default: Any, read_only: bool = False, low: float | None = None,
              high: float | None = None, kind: type | None = None) -> Any:
    """A dataclass field that is a ROS parameter (list defaults are copied per instance).

    ``default=None`` with a ``kind`` (``list`` for a string array) declares the parameter unset: its
    value stays None unless a parameters file or ``-p`` sets it (ROS has no empty-array default).
    """
    metadata = {"help": description, "read_only": read_only, "range": (low, high), "kind": kind or type(default)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _types() -> dict[type, int]:
    from rcl_interfaces.msg import ParameterType

    return {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
            float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
            list: ParameterType.PARAMETER_STRING_ARRAY}


def _descriptor(field: dataclasses.Field) -> Any:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    kind = field.metadata["kind"]
    descriptor = ParameterDescriptor(description=field.metadata["help"], read_only=field.metadata["read_only"],
                                     type=_types()[kind])
    low, high = field.metadata["range"]
    if low is not None and kind is float:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    elif low is not None and kind is int:
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return descriptor


def declare(node: Any, cls: type[T]) -> T:
    """Declare every field of ``cls`` on ``node`` (values from the parameters file / --ros-args win)."""
    from rclpy.parameter import Parameter

    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        if default is None:  # declared by type only: unset unless given
            default = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
                       str: Parameter.Type.STRING, list: Parameter.Type.STRING_ARRAY}[field.metadata["kind"]]
        declared = node.declare_parameter(field.name, default, _descriptor(field))
        values[field.name] = declared.value
    return cls(**values)


def update(config: T, parameters: list[Any]) -> T:
    """``config`` with changed ``parameters`` applied (rclpy has already enforced read-only flags and ranges)."""
    names = {field.name for field in dataclasses.fields(config)}  # type: ignore[arg-type]
    return dataclasses.replace(config, **{p.name: p.value for p in parameters if p.name in names})  # type: ignore
