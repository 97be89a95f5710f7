from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections import OrderedDict, namedtuple

import pytest

from resilience.checkpoint import serialize


def roundtrip(value: object) -> object:
    return serialize.loads(serialize.dumps(value))


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Key(enum.StrEnum):
    NAME = "name"


@dataclasses.dataclass
class Step:
    tool: str
    args: tuple[int, ...]


Point = namedtuple("Point", "x y")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2024, 5, 6, 7, 8, 9, 10), "2024-05-06T07:08:09.000010"),
        (
            dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-05-06T07:08:09+02:00",
        ),
        (dt.datetime(2024, 5, 6, tzinfo=dt.UTC), "2024-05-06T00:00:00+00:00"),
        (dt.date(2024, 2, 29), "2024-02-29"),
        (dt.time(13, 45, 1), "13:45:01"),
        (
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "12345678-1234-5678-1234-567812345678",
        ),
        (decimal.Decimal("1.10"), "1.10"),
        (decimal.Decimal("-1E+400"), "-1E+400"),
        (b"\x00\xffhi", "AP9oaQ=="),
        (bytearray(b"ab"), "YWI="),
        (memoryview(b"abc"), "YWJj"),
        ((1, "a", (2,)), [1, "a", [2]]),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        (Color.RED, "red"),
        (Level.HIGH, 3),
        (Step(tool="search", args=(1, 2)), {"tool": "search", "args": [1, 2]}),
        (Point(1, 2), [1, 2]),
        (OrderedDict([("b", 1), ("a", 2)]), {"b": 1, "a": 2}),
        ({Key.NAME: 1}, {"name": 1}),
        (float("nan"), None),
        (float("inf"), None),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (2**64 - 1, 2**64 - 1),
    ],
    ids=repr,
)
def test_dumps_converts_documented_types_to_plain_json(value: object, expected: object) -> None:
    assert roundtrip({"v": value}) == {"v": expected}


def test_set_of_mixed_types_is_stored_as_a_list_of_its_items() -> None:
    loaded = roundtrip({1, "a"})
    assert isinstance(loaded, list)
    assert sorted(loaded, key=str) == [1, "a"]


def test_plain_json_types_round_trip_unchanged() -> None:
    state = {"s": "é✓", "i": -5, "f": 1.5, "t": True, "n": None, "l": [{"x": []}]}
    assert roundtrip(state) == state


def test_type_error_names_the_path_of_an_unsupported_value() -> None:
    state = {"tools": [{"name": "a"}, {}, {}, {"name": "calc", "fn": len}]}
    with pytest.raises(TypeError, match=r'^state\["tools"\]\[3\]\["fn"\] cannot be stored'):
        serialize.dumps(state)


def test_type_error_names_dataclass_fields_and_set_members() -> None:
    with pytest.raises(TypeError, match=r'^state\["step"\]\.args\[1\] cannot be stored'):
        serialize.dumps({"step": Step(tool="x", args=(1, object()))})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^state\[0\]\[0\] cannot be stored"):
        serialize.dumps([{object()}])


def test_type_error_uses_the_given_root_name() -> None:
    with pytest.raises(TypeError, match=r'^metadata\["when"\] cannot be stored'):
        serialize.dumps({"when": object()}, root="metadata")


def test_non_string_dict_keys_are_rejected_with_their_path() -> None:
    with pytest.raises(TypeError, match=r'^state\["counts"\] has a dict key that is not a str: 3'):
        serialize.dumps({"counts": {"a": 1, 3: 2}})
    with pytest.raises(TypeError, match=r"not a str: None"):
        serialize.dumps({None: 1})


def test_integers_beyond_64_bits_are_rejected_with_their_path() -> None:
    with pytest.raises(TypeError, match=r'^state\["big"\] is an integer outside the 64-bit'):
        serialize.dumps({"big": 2**64})
    with pytest.raises(TypeError, match=r"^state\[1\] is an integer outside"):
        serialize.dumps([0, -(2**63) - 1])


def test_circular_references_are_rejected_with_their_path() -> None:
    loop: list[object] = [1]
    loop.append({"back": loop})
    with pytest.raises(TypeError, match=r'^state\["a"\]\[1\]\["back"\] is a circular reference'):
        serialize.dumps({"a": loop})


def test_a_value_shared_by_two_branches_is_not_a_cycle() -> None:
    shared = {"x": 1}
    assert roundtrip({"a": shared, "b": [shared]}) == {"a": {"x": 1}, "b": [{"x": 1}]}


def test_excessive_nesting_is_rejected_with_a_type_error() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(400):
        child: list[object] = []
        node.append(child)
        node = child
    with pytest.raises(TypeError, match="nested more than 250 levels"):
        serialize.dumps(deep)


def test_unsupported_enum_value_is_reported_under_the_enum() -> None:
    class Weird(enum.Enum):
        FN = (len,)

    with pytest.raises(TypeError, match=r'^state\["e"\]\.value\[0\] cannot be stored'):
        serialize.dumps({"e": Weird.FN})


def test_subclasses_of_supported_types_use_the_same_conversion() -> None:
    class Stamp(dt.datetime):
        pass

    class Id(uuid.UUID):
        pass

    value = {"t": Stamp(2024, 1, 2, 3, 4, 5), "u": Id(int=1)}
    assert roundtrip(value) == {
        "t": "2024-01-02T03:04:05",
        "u": "00000000-0000-0000-0000-000000000001",
    }
