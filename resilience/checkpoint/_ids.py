"""Checkpoint ids and the names that group checkpoints: generation and strict validation.

A checkpoint id is ``ck_`` + 14 lowercase hex digits of a microsecond tick + ``_`` +
12 lowercase hex random digits, e.g. ``ck_00061a8b3c4d5e6f_9a0b1c2d3e4f``. The tick is
the save time in microseconds since the epoch, bumped by one when needed so that ids
are strictly increasing within a process; the random part keeps ids unique across
processes. Ids sort by their writer's clock, which may step back or differ between
hosts: the store's sequence, not the id, says which checkpoint is the newest.
"""

from __future__ import annotations

import re
import secrets
import threading

from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "CHECKPOINT_ID_PATTERN",
    "NAME_MAX_LENGTH",
    "NAME_PATTERN",
    "new_checkpoint_id",
    "validate_checkpoint_id",
    "validate_name",
]

CHECKPOINT_ID_PATTERN = re.compile(r"ck_[0-9a-f]{14}_[0-9a-f]{12}")
"""Every valid checkpoint id matches this pattern in full (``fullmatch``)."""

NAME_MAX_LENGTH = 128
NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:@-]{{0,{NAME_MAX_LENGTH - 1}}}")
"""``agent_id`` / ``workflow_id``: 1-128 ASCII letters, digits and ``_ . : @ -``, starting
with a letter or digit (so no path separators, whitespace, ``..`` prefix or control
characters reach a file name, a URL or a log line)."""

_lock = threading.Lock()
_last_tick = 0


def new_checkpoint_id(now: float) -> str:
    """Return a new id for a checkpoint saved at ``now`` (seconds since the epoch).

    Ids from one process are strictly increasing in call order, whatever ``now`` is.
    """
    global _last_tick
    tick = max(int(now * 1_000_000), 0)
    with _lock:
        if tick <= _last_tick:
            tick = _last_tick + 1
        _last_tick = tick
    return f"ck_{tick:014x}_{secrets.token_hex(6)}"


def validate_checkpoint_id(checkpoint_id: object) -> str:
    """Return ``checkpoint_id`` if it is a well-formed id.

    Raises:
        ConfigTypeError: it is not a ``str``.
        ConfigValueError: it is malformed (empty, too long, path separators, ...).
    """
    if not isinstance(checkpoint_id, str):
        raise ConfigTypeError(f"checkpoint_id must be a str, got {checkpoint_id!r}")
    if CHECKPOINT_ID_PATTERN.fullmatch(checkpoint_id) is None:
        shown = checkpoint_id if len(checkpoint_id) <= 80 else checkpoint_id[:80] + "..."
        raise ConfigValueError(
            f"checkpoint_id must look like 'ck_<14 hex>_<12 hex>', got {shown!r}"
        )
    return checkpoint_id


def validate_name(field: str, value: object) -> str:
    """Return ``value`` if it is a valid ``agent_id`` / ``workflow_id`` (see NAME_PATTERN).

    Raises:
        ConfigTypeError: it is not a ``str``.
        ConfigValueError: it is empty, longer than 128 characters or has other characters.
    """
    if not isinstance(value, str):
        raise ConfigTypeError(f"{field} must be a str, got {value!r}")
    if NAME_PATTERN.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ConfigValueError(
            f"{field} must be 1-{NAME_MAX_LENGTH} characters of letters, digits and "
            f"'_.:@-', starting with a letter or digit; got {shown!r}"
        )
    return value
