"""The registry of alert rule kinds: each kind is registered once, with its parameters
(a frozen dataclass from :mod:`.params`) and its evaluator (in :mod:`.sources`).

``AlertRule.kind``'s choices (``RuleKind``) name the kinds the database may hold; the
registry is what can parse and evaluate them. A test checks that the two agree, so a
kind added to one and forgotten in the other fails at once instead of at evaluation.

Adding a kind: a ``RuleKind`` member (and its migration), a parameters dataclass, and
one ``@RULE_KINDS.register(RuleKind.NEW, params=NewParams)`` on its evaluator.

The registry is filled at import of :mod:`.sources` and only read afterwards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, Generic, TypeVar

from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "Evaluation",
    "Observation",
    "RuleError",
    "RuleKindRegistry",
    "RuleKindSpec",
    "SampleMemory",
]

P = TypeVar("P")


class RuleError(ValueError):
    """The rule cannot be evaluated as written (unknown metric, bad parameter...)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """The condition of one rule for one subject at one evaluation."""

    subject: str
    value: float | None
    active: bool
    message: str


class SampleMemory:
    """Recent samples of monotonic counters, to turn totals into increases over a window."""

    def __init__(self) -> None:
        self._samples: dict[tuple[Any, ...], deque[tuple[float, float]]] = {}
        self._marks: dict[tuple[Any, ...], Any] = {}

    def increase(
        self, key: tuple[Any, ...], value: float, now: float, window: float
    ) -> tuple[float, float] | None:
        """Record ``value`` at ``now``; return (increase, seconds covered) over ``window``.

        None on the first sample. A counter that went down (its owner was re-created)
        starts over.
        """
        samples = self._samples.setdefault(key, deque())
        if samples and value < samples[-1][1]:
            samples.clear()
        samples.append((now, value))
        # Keep the newest sample at or before the window's start as the baseline.
        while len(samples) > 1 and samples[1][0] <= now - window:
            samples.popleft()
        if len(samples) < 2:
            return None
        start, base = samples[0]
        return value - base, now - start

    def mark(self, key: tuple[Any, ...], value: Any) -> Any:
        """Remember ``value`` under ``key``; return what was remembered before (or None)."""
        previous = self._marks.get(key)
        self._marks[key] = value
        return previous

    def prune(self, now: float, max_age: float = 3600.0) -> None:
        """Forget series not sampled for ``max_age`` seconds (deleted limiters, rules)."""
        for key in [k for k, s in self._samples.items() if not s or s[-1][0] < now - max_age]:
            del self._samples[key]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What an evaluator may use besides its parameters.

    Attributes:
        memory: earlier samples, kept between evaluations (for rates and increases).
        key: distinguishes this rule's samples in ``memory`` (the rule's id).
        now: epoch seconds (the engine's clock).
    """

    memory: SampleMemory
    key: Any
    now: float


Evaluator = Callable[[P, Evaluation], list[Observation]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleKindSpec(Generic[P]):
    """One kind of rule: its name, its parameters' dataclass and its evaluator."""

    kind: str
    params: type[P]
    evaluate: Evaluator[P]

    def parse(self, parameters: Mapping[str, Any]) -> P:
        """Check ``parameters`` into the kind's dataclass.

        Raises:
            ValueError / TypeError: unknown or missing parameter, bad value; the
                message names the parameter and the value.
        """
        if not isinstance(parameters, Mapping):
            raise ConfigTypeError(f"parameters must be a JSON object, got {parameters!r}")
        declared = fields(self.params)  # type: ignore[arg-type]
        known = {f.name for f in declared}
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise ConfigValueError(
                f"unknown parameter {unknown[0]!r} for {self.kind} rules, "
                f"expected some of {sorted(known)}"
            )
        required = {
            f.name for f in declared if f.default is MISSING and f.default_factory is MISSING
        }
        missing = sorted(required - set(parameters))
        if missing:
            raise ConfigValueError(f"{self.kind} rules need the parameter {missing[0]!r}")
        return self.params(**parameters)


class RuleKindRegistry:
    """Rule kinds by name."""

    def __init__(self) -> None:
        self._specs: dict[str, RuleKindSpec[Any]] = {}

    def register(self, kind: str, *, params: type[P]) -> Callable[[Evaluator[P]], Evaluator[P]]:
        """Decorator: register the decorated evaluator as ``kind``, parsing ``params``.

        Raises:
            ValueError: ``kind`` is already registered.
        """

        def decorate(evaluate: Evaluator[P]) -> Evaluator[P]:
            if kind in self._specs:
                raise ValueError(f"rule kind {kind!r} is already registered")
            self._specs[str(kind)] = RuleKindSpec(kind=str(kind), params=params, evaluate=evaluate)
            return evaluate

        return decorate

    def get(self, kind: object) -> RuleKindSpec[Any]:
        """The kind ``kind``.

        Raises:
            ConfigValueError: not registered; the message lists the registered kinds.
        """
        spec = self._specs.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise ConfigValueError(
                f"unknown rule kind {kind!r}, expected one of {sorted(self._specs)}"
            )
        return spec

    def kinds(self) -> tuple[str, ...]:
        """The registered kinds, in registration order."""
        return tuple(self._specs)

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs

    def parse(self, kind: str, parameters: Mapping[str, Any]) -> Any:
        """Check a rule's parameters; returns them as the kind's frozen dataclass.

        Raises:
            ValueError / TypeError: unknown kind, unknown or missing parameter, bad
                value; the message names the parameter and the value.
        """
        return self.get(kind).parse(parameters)

    def evaluate(
        self, kind: str, parameters: Mapping[str, Any], evaluation: Evaluation
    ) -> list[Observation]:
        """Parse ``parameters`` and observe every subject of the rule.

        Raises:
            RuleError / ValueError / TypeError: the rule cannot be evaluated.
        """
        spec = self.get(kind)
        return spec.evaluate(spec.parse(parameters), evaluation)
