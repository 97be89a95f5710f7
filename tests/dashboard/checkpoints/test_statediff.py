"""The structural diff of two states (deepdiff after pruning), the JSON tree and search."""

from __future__ import annotations

import copy
import random
from typing import Any

from deepdiff import DeepDiff
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_checkpoint import make_agent_state
from dashboard.checkpoints.jsontree import json_path, render_tree, search_state
from dashboard.checkpoints.statediff import diff_states, render_folded


def paths(diff: Any) -> list[tuple[str, str]]:
    return [(c.kind, c.path) for c in diff.changes]


def test_added_removed_and_changed_paths_are_reported() -> None:
    a = {"step": 3, "results": {"plan": {"budget": 25}, "draft": "x"}, "log": [1, 2]}
    b = {"step": 4, "results": {"plan": {"budget": 30}, "extra": True}, "log": [1, 2, 3]}
    diff = diff_states(a, b)
    assert paths(diff) == [
        ("added", "$.log[2]"),
        ("removed", "$.results.draft"),
        ("added", "$.results.extra"),
        ("changed", "$.results.plan.budget"),
        ("changed", "$.step"),
    ]
    changed = {c.path: (c.old, c.new) for c in diff.changed}
    assert changed["$.results.plan.budget"] == (25, 30)
    assert [c.path for c in diff.added] == ["$.log[2]", "$.results.extra"]
    assert not diff.identical


def test_identical_states_have_no_changes() -> None:
    state = {"a": [1, {"b": None}]}
    assert diff_states(state, copy.deepcopy(state)).identical


def test_type_changes_count_as_changed() -> None:
    diff = diff_states({"a": [1]}, {"a": {"0": 1}})
    assert paths(diff) == [("changed", "$.a")]


def _deepdiff_paths(a: Any, b: Any) -> list[tuple[Any, ...]]:
    tree = DeepDiff(a, b, view="tree", threshold_to_diff_deeper=0)
    return sorted(
        (tuple(level.path(output_format="list")) for levels in tree.values() for level in levels),
        key=repr,
    )


def test_pruning_gives_the_same_paths_as_deepdiff_on_whole_agent_states() -> None:
    a = make_agent_state(60_000, seed=1)
    b = copy.deepcopy(a)
    rng = random.Random(5)
    b["messages"][3]["content"] = "rewritten"
    b["messages"].append({"id": "new", "role": "user"})
    b["tool_calls"][1]["arguments"]["limit"] = 99
    b["rewards"] = b["rewards"][:-2]
    b["embeddings"][0][rng.randrange(256)] = 7.0
    del b["scratchpad"]
    mine = sorted((c.parts for c in diff_states(a, b).changes), key=repr)
    assert mine == _deepdiff_paths(a, b)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text("abc", max_size=2), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values, json_values)
def test_pruned_diff_equals_deepdiff_on_any_json(a: Any, b: Any) -> None:
    mine = sorted((c.parts for c in diff_states(a, b).changes), key=repr)
    assert mine == _deepdiff_paths(a, b)


def test_folded_view_opens_changed_branches_and_folds_unchanged_ones() -> None:
    a = {"same": {"deep": list(range(50))}, "other": 1, "results": {"x": 1, "y": 2}}
    b = {"same": {"deep": list(range(50))}, "other": 1, "results": {"x": 1, "y": 3}}
    html = str(render_folded(a, b, diff_states(a, b)))
    assert 'data-path="$.results.y"' in html
    assert "… 2 unchanged" in html  # same, other
    assert "… 1 unchanged" in html  # results.x
    assert "49" not in html  # the unchanged list is not rendered


def test_paths_quote_keys_that_are_not_identifiers() -> None:
    assert json_path(["results", "a b", 0, "x-y"]) == '$.results["a b"][0]["x-y"]'
    assert json_path([]) == "$"


def test_tree_is_nested_details_with_copyable_paths_and_escaped_values() -> None:
    tree = render_tree({"a": {"b": [1, "<script>"]}, "c": None})
    html = str(tree.html)
    assert html.startswith('<ul class="json-tree">')
    assert html.count("<details") == 3  # $, a, b
    assert 'data-path="$.a.b[1]"' in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert tree.nodes == 6 and not tree.truncated


def test_tree_is_cut_at_max_nodes() -> None:
    tree = render_tree({"items": list(range(100))}, max_nodes=10)
    assert tree.truncated and tree.nodes == 10


def test_search_finds_keys_and_values_with_paths() -> None:
    state = {"results": {"draft": {"words": 600}, "publish": "Draft ready"}, "n": [5, 600]}
    matches, more = search_state(state, "draft")
    assert [m.path for m in matches] == ["$.results.draft", "$.results.publish"]
    assert not more
    numbers, _ = search_state(state, "600")
    assert [m.path for m in numbers] == ["$.results.draft.words", "$.n[1]"]
    limited, more = search_state({"k": ["x"] * 10}, "x", limit=3)
    assert len(limited) == 3 and more
