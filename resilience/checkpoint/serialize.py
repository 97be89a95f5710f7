"""JSON serialization of checkpoint state (orjson), never pickle.

Conversions applied at save time (``load`` returns plain JSON types: dict, list, str,
int, float, bool, None):

==============================  ==================================================
value                           stored as
==============================  ==================================================
dict with ``str`` keys          object (``str`` subclass keys, e.g. ``StrEnum``,
                                become plain strings)
list, tuple                     array
set, frozenset                  array, sorted when the items are mutually orderable,
                                otherwise in iteration order
dataclass instance              object of its fields
datetime, date, time            ISO 8601 string (``value.isoformat()``)
uuid.UUID                       canonical string ``"1b4e28ba-2fa1-11d2-..."``
decimal.Decimal                 string ``str(value)`` (exact, no float rounding)
bytes, bytearray, memoryview    standard base64 string (with padding)
enum.Enum                       its ``value`` (converted by these same rules)
float NaN / +-Infinity          ``null`` (as in JavaScript's ``JSON.stringify``)
==============================  ==================================================

Anything else raises :class:`TypeError` naming where the value sits in the state,
e.g. ``state["tools"][3]["fn"]``: functions, arbitrary objects, integers outside the
signed/unsigned 64-bit range, circular references, nesting deeper than about 250 levels, and
dict keys that are not strings (``{1: "a"}`` is rejected rather than silently turned
into ``{"1": "a"}``, which would not round-trip).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

_MAX_DEPTH = 250
_SCALARS = (str, int, float, bool, type(None), dt.date, dt.time, uuid.UUID, decimal.Decimal)
_BINARY = (bytes, bytearray, memoryview)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, _BINARY):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, tuple):  # namedtuple and other tuple subclasses
        return list(value)
    # Subclasses orjson does not take natively (e.g. pandas.Timestamp is a datetime).
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError


def dumps(value: object, *, root: str = "state") -> bytes:
    """Serialize ``value`` to JSON bytes with the conversions in the module docstring.

    Args:
        value: the object to serialize.
        root: the name used for ``value`` in error messages (``state``, ``metadata``).

    Raises:
        TypeError: a value cannot be stored; the message names its path.

    Returns:
        UTF-8 JSON bytes.
    """
    try:
        return orjson.dumps(value, default=_default)
    except TypeError as exc:
        # Slow path, only on failure: find where the offending value sits.
        problem = _find_problem(value, root)
        if problem is None:
            raise TypeError(f"{root} cannot be stored as JSON: {exc}") from exc
        if problem == _STR_SUBCLASS_KEYS:
            # Only str subclasses (e.g. StrEnum) as keys: store their plain string value.
            return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
        raise TypeError(problem) from exc


def loads(data: bytes) -> Any:
    """Parse JSON bytes produced by :func:`dumps` into plain JSON types."""
    return orjson.loads(data)


_STR_SUBCLASS_KEYS = "\0str-subclass-keys"


def _key_path(key: str) -> str:
    return "[" + orjson.dumps(key).decode() + "]"


def _children(value: object, path: str) -> Iterator[tuple[object, str]] | str | None:
    """Yield (child, path) pairs, or return an error message, or None for a leaf."""
    if isinstance(value, enum.Enum):
        return iter([(value.value, f"{path}.value")])
    if isinstance(value, _SCALARS + _BINARY):
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            return f"{path} is an integer outside the 64-bit range: {value!r}"
        return None
    if isinstance(value, dict):
        return iter([(item, f"{path}{_key_path(str(key))}") for key, item in value.items()])
    if isinstance(value, list | tuple):
        return iter([(item, f"{path}[{index}]") for index, item in enumerate(value)])
    if isinstance(value, set | frozenset):
        return iter([(item, f"{path}[{index}]") for index, item in enumerate(value)])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return iter(
            [(getattr(value, f.name), f"{path}.{f.name}") for f in dataclasses.fields(value)]
        )
    kind = type(value)
    return (
        f"{path} cannot be stored as JSON: {kind.__module__}.{kind.__qualname__} "
        f"{_short_repr(value)} (see resilience.checkpoint.serialize for supported types)"
    )


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return "<unrepresentable>"
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_keys(value: dict[Any, Any], path: str) -> str | None:
    for key in value:
        if isinstance(key, str):
            continue
        kind = type(key).__name__
        return f"{path} has a dict key that is not a str: {_short_repr(key)} ({kind})"
    return None


def _find_problem(value: object, root: str) -> str | None:
    """Depth-first search for the first unsupported value; returns a message or None."""
    str_subclass_keys = False
    on_path: set[int] = set()
    # Each frame: (iterator over children, id of the container it belongs to).
    stack: list[tuple[Iterator[tuple[object, str]], int]] = []
    pending: list[tuple[object, str]] = [(value, root)]
    while pending or stack:
        if pending:
            node, path = pending.pop()
            if isinstance(node, dict):
                bad = _bad_keys(node, path)
                if bad is not None:
                    return bad
                if any(type(key) is not str for key in node):
                    str_subclass_keys = True
            children = _children(node, path)
            if isinstance(children, str):
                return children
            if children is None:
                continue
            if id(node) in on_path:
                return f"{path} is a circular reference"
            if len(stack) >= _MAX_DEPTH:
                return f"{path} is nested more than {_MAX_DEPTH} levels deep"
            on_path.add(id(node))
            stack.append((children, id(node)))
            continue
        children, owner = stack[-1]
        nxt = next(children, None)
        if nxt is None:
            stack.pop()
            on_path.discard(owner)
        else:
            pending.append(nxt)
    return _STR_SUBCLASS_KEYS if str_subclass_keys else None
