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
              high: float | None = None) -> Any:
    """A dataclass field that is a ROS parameter (list defaults are copied per instance)."""
    metadata = {"help": description, "read_only": read_only, "range": (low, high)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _descriptor(field: dataclasses.Field, value: Any) -> Any:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    kinds = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
             list: ParameterType.PARAMETER_STRING_ARRAY}
    descriptor = ParameterDescriptor(description=field.metadata["help"], read_only=field.metadata["read_only"],
                                     type=kinds[type(value)])
    low, high = field.metadata["range"]
    if low is not None and isinstance(value, float):
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    elif low is not None and isinstance(value, int):
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return descriptor


def declare(node: Any, cls: type[T]) -> T:
    """Declare every field of ``cls`` on ``node`` (values from the parameters file / --ros-args win)."""
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        declared = node.declare_parameter(field.name, default, _descriptor(field, default))
        values[field.name] = declared.value
    return cls(**values)


def update(config: T, parameters: list[Any]) -> T:
    """``config`` with changed ``parameters`` applied (rclpy has already enforced read-only flags and ranges)."""
    names = {field.name for field in dataclasses.fields(config)}  # type: ignore[arg-type]
    return dataclasses.replace(config, **{p.name: p.value for p in parameters if p.name in names})  # type: ignore
