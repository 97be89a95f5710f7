"""Every kind of alert rule is registered once, and the registry agrees with the model."""

from __future__ import annotations

from dataclasses import is_dataclass

import pytest

from dashboard.alerts.kinds import Evaluation, Observation, RuleKindRegistry, SampleMemory
from dashboard.alerts.models import AlertRule, RuleKind
from dashboard.alerts.sources import RULE_KINDS, parse_parameters
from resilience.errors import ConfigValueError


def test_every_kind_in_the_models_choices_is_registered_and_vice_versa() -> None:
    field_choices = {value for value, _label in AlertRule._meta.get_field("kind").choices}
    assert field_choices == set(RuleKind.values)
    assert set(RULE_KINDS.kinds()) == field_choices


@pytest.mark.parametrize("kind", RuleKind.values)
def test_each_kind_parses_into_a_frozen_dataclass(kind: str) -> None:
    spec = RULE_KINDS.get(kind)
    assert spec.kind == kind
    assert is_dataclass(spec.params)
    assert spec.params.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_an_unknown_kind_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigValueError, match="unknown rule kind 'nope'") as caught:
        parse_parameters("nope", {})
    for kind in RuleKind.values:
        assert repr(kind) in str(caught.value)


def test_a_kind_cannot_be_registered_twice() -> None:
    registry = RuleKindRegistry()

    @registry.register("demo", params=Evaluation)
    def first(params: Evaluation, at: Evaluation) -> list[Observation]:
        return []

    with pytest.raises(ValueError, match="already registered"):

        @registry.register("demo", params=Evaluation)
        def second(params: Evaluation, at: Evaluation) -> list[Observation]:
            return []

    assert registry.get("demo").evaluate is first


def test_an_evaluator_receives_its_parsed_parameters_and_the_evaluation() -> None:
    registry = RuleKindRegistry()
    seen: list[tuple[object, Evaluation]] = []

    @registry.register(RuleKind.SPAN_DROPS, params=RULE_KINDS.get(RuleKind.SPAN_DROPS).params)
    def drops(params: object, at: Evaluation) -> list[Observation]:
        seen.append((params, at))
        return [Observation("x", 1.0, True, "m")]

    at = Evaluation(SampleMemory(), 7, 1000.0)
    assert registry.evaluate(RuleKind.SPAN_DROPS, {"threshold": 2}, at) == [
        Observation("x", 1.0, True, "m")
    ]
    [(params, got)] = seen
    assert got is at
    assert params.threshold == 2  # type: ignore[attr-defined]
