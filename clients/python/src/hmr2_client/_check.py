"""Reading JSON objects into typed values, as strictly as the Rust types read them: a required
key must be there and of its type, ``null`` only where the value is optional, unknown keys are
ignored."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar

T = TypeVar("T")

_ABSENT: Any = object()


class ShapeError(ValueError):
    """A JSON value that is not of the contract's shape."""


def kind(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, (int, float)):
        return "a number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, list):
        return "an array"
    if isinstance(x, dict):
        return "an object"
    return type(x).__name__


def obj(x: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(x, dict):
        raise ShapeError(f"{what}: expected an object, got {kind(x)}")
    return x


def string(x: Any, what: str) -> str:
    if not isinstance(x, str):
        raise ShapeError(f"{what}: expected a string, got {kind(x)}")
    return x


def boolean(x: Any, what: str) -> bool:
    if not isinstance(x, bool):
        raise ShapeError(f"{what}: expected a boolean, got {kind(x)}")
    return x


def number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ShapeError(f"{what}: expected a number, got {kind(x)}")
    return float(x)


def unsigned(bits: int) -> Callable[[Any, str], int]:
    top = 2**bits

    def read(x: Any, what: str) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < top:
            raise ShapeError(f"{what}: expected an integer from 0 to {top - 1}, got {x!r}")
        return int(x)

    return read


def signed(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not -(2**63) <= x < 2**63:
        raise ShapeError(f"{what}: expected an integer, got {x!r}")
    return int(x)


def one_of(*names: str) -> Callable[[Any, str], str]:
    def read(x: Any, what: str) -> str:
        if x not in names:
            raise ShapeError(f"{what}: expected one of {', '.join(names)}, got {x!r}")
        return str(x)

    return read


def array(item: Callable[[Any, str], T], length: Optional[int] = None) -> Callable[[Any, str], List[T]]:
    """A JSON array of ``item``s (of exactly ``length`` when given)."""

    def read(x: Any, what: str) -> List[T]:
        if not isinstance(x, list):
            raise ShapeError(f"{what}: expected an array, got {kind(x)}")
        if length is not None and len(x) != length:
            raise ShapeError(f"{what}: expected {length} items, got {len(x)}")
        return [item(v, f"{what}[{i}]") for i, v in enumerate(x)]

    return read


def numbers(length: Optional[int] = None) -> Callable[[Any, str], List[float]]:
    """A JSON array of numbers, fast: checked in bulk, converted to floats."""

    def read(x: Any, what: str) -> List[float]:
        if not isinstance(x, list):
            raise ShapeError(f"{what}: expected an array, got {kind(x)}")
        if length is not None and len(x) != length:
            raise ShapeError(f"{what}: expected {length} numbers, got {len(x)}")
        for i, v in enumerate(x):
            if v.__class__ is not float and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ShapeError(f"{what}[{i}]: expected a number, got {kind(v)}")
        return [float(v) for v in x]

    return read


def field(
    d: Mapping[str, Any],
    key: str,
    read: Callable[[Any, str], T],
    what: str,
    default: Any = _ABSENT,
    nullable: bool = False,
) -> Any:
    """``d[key]`` read with ``read``. Absent: ``default`` (an error when there is none).
    ``null``: ``None`` when ``nullable``, else an error."""
    if key not in d:
        if default is _ABSENT:
            raise ShapeError(f"{what}: missing `{key}`")
        return default() if callable(default) else default
    v = d[key]
    if v is None and nullable:
        return None
    return read(v, f"{what}.{key}")


def drop_none(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
