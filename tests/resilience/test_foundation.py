"""Errors, validation helpers, registry, and the package's independence from Django."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from datetime import timedelta

import pytest

from resilience import _validate as v
from resilience.errors import (
    CheckpointNotFoundError,
    CircuitOpenError,
    ConfigTypeError,
    ConfigValueError,
    RateLimitError,
    ResilienceError,
)
from resilience.registry import Registry


def test_errors_pickle_with_their_fields() -> None:
    err = pickle.loads(pickle.dumps(RateLimitError("slow down", retry_after=1.5, name="api")))
    assert (str(err), err.retry_after, err.name) == ("slow down", 1.5, "api")
    opened = pickle.loads(pickle.dumps(CircuitOpenError("pay", 2.0)))
    assert (opened.name, opened.remaining) == ("pay", 2.0)
    assert "retry in 2.000s" in str(opened)


def test_circuit_open_messages_describe_forced_and_full_half_open() -> None:
    assert "forced open" in str(CircuitOpenError("a", None))
    assert "trial calls are taken" in str(CircuitOpenError("a", 0))


def test_config_errors_are_both_resilience_and_builtin_errors() -> None:
    assert issubclass(ConfigValueError, ResilienceError | ValueError)
    assert issubclass(ConfigValueError, ValueError)
    assert issubclass(ConfigTypeError, TypeError)
    assert issubclass(CheckpointNotFoundError, LookupError)


@pytest.mark.parametrize("value", [0, -1, -0.5])
def test_positive_rejects_zero_and_negative(value: float) -> None:
    with pytest.raises(ConfigValueError, match=rf"rate must be > 0, got {value!r}"):
        v.positive("rate", value)


@pytest.mark.parametrize("value", [True, "3", None, [1]])
def test_numbers_reject_wrong_types_including_bool(value: object) -> None:
    with pytest.raises(ConfigTypeError, match="limit must be a number"):
        v.positive("limit", value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_numbers_reject_nan_and_inf(value: float) -> None:
    with pytest.raises(ConfigValueError, match="must be finite"):
        v.non_negative("x", value)


def test_int_helpers() -> None:
    assert v.positive_int("n", 3) == 3
    assert v.non_negative_int("n", 0) == 0
    with pytest.raises(ConfigTypeError, match="n must be an int, got 2.0"):
        v.positive_int("n", 2.0)
    with pytest.raises(ConfigValueError, match="n must be >= 1, got 0"):
        v.positive_int("n", 0)


def test_duration_accepts_timedelta_and_rejects_negative() -> None:
    assert v.duration("timeout", timedelta(minutes=1)) == 60.0
    assert v.duration("timeout", 0) == 0.0
    with pytest.raises(ConfigValueError, match="timeout must be > 0 seconds"):
        v.duration("timeout", 0, allow_zero=False)
    with pytest.raises(ConfigValueError, match="timeout must be >= 0 seconds"):
        v.duration("timeout", timedelta(seconds=-1))


def test_registry_setdefault_keeps_the_first_and_lists_sorted() -> None:
    reg: Registry[object] = Registry("thing")
    first = reg.setdefault("b", object)
    assert reg.setdefault("b", object) is first
    reg.register("a", "A")
    assert reg.names() == ["a", "b"]
    assert reg.all() == ["A", first]
    assert reg.get("zzz") is None
    assert reg.remove("a") == "A"
    assert "a" not in reg
    with pytest.raises(TypeError, match="thing name must be a non-empty str"):
        reg.setdefault("", object)


def test_resilience_imports_without_django() -> None:
    code = (
        "import sys, resilience, resilience.events, resilience.dispatch, resilience.registry\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(resilience.__path__, 'resilience.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], "
        "sorted(m for m in sys.modules if m.startswith('django'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
