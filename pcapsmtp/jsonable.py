"""Turning dissector objects into JSON-friendly values, and bytes into safe text."""

from __future__ import annotations

from typing import Any

# Exact types plain() returns as they are.  Checking the exact type first (and lists of
# them in one comprehension) made describe() of a ClientHello, mostly lists of ints,
# about twice as fast as the isinstance chain; subclasses still take the chain below.
_AS_IS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Dataclasses as dicts, bytes escaped, containers as lists: what json.dumps takes."""
    t = type(value)
    if t in _AS_IS:
        return value
    if t is list or t is tuple:
        return [v if type(v) in _AS_IS else plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes | bytearray):
        return escape(bytes(value))
    if hasattr(type(value), "__dataclass_fields__"):
        return plain_fields(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def plain_fields(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass's fields (minus ``skip``) as JSON-friendly values."""
    names = getattr(type(obj), "__dataclass_fields__", None)
    if names is None:
        return {}
    return {name: plain(getattr(obj, name)) for name in names if name not in skip}


def escape(data: bytes, limit: int = 64) -> str:
    """Printable ASCII as is, everything else backslash-escaped, cut at ``limit`` bytes."""
    text = data[:limit].decode("ascii", "backslashreplace")
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text + ("..." if len(data) > limit else "")
