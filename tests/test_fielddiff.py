"""The fields a commit changed in a task file, by their dotted paths."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.fielddiff import changed_fields

KEYS = st.sampled_from(["id", "label", "source", "schedule", "time", "path", "paths", "x"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-2, 2).map(lambda f: f + 0.0)
    | st.text(max_size=3)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=5)


def leaves(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Each leaf of a document by its dotted path (an empty mapping is a leaf)."""
    found: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found.update(leaves(value, f"{path}."))
        else:
            found[path] = value
    return found


def test_a_changed_nested_value_is_named_by_its_dotted_path() -> None:
    before = {"id": 1, "schedule": {"time": "02:30", "frequency": "daily"}}
    after = {"id": 1, "schedule": {"time": "04:00", "frequency": "daily"}}
    assert changed_fields(before, after) == ("schedule.time",)


def test_a_list_is_one_field_compared_whole() -> None:
    before = {"source": {"paths": ["/srv", "/etc"]}}
    after = {"source": {"paths": ["/etc", "/srv"]}}
    assert changed_fields(before, after) == ("source.paths",)


def test_values_of_other_types_differ_though_python_calls_them_equal() -> None:
    assert changed_fields({"paused": 1}, {"paused": True}) == ("paused",)
    assert changed_fields({"max": 5}, {"max": 5.0}) == ("max",)


def test_a_field_added_or_removed_names_every_field_below_it() -> None:
    before = {"id": 1}
    after = {"id": 1, "storage": {"max_backups": 4, "path": "shop"}}
    assert changed_fields(before, after) == ("storage.max_backups", "storage.path")
    assert changed_fields(after, before) == ("storage.max_backups", "storage.path")


def test_a_mapping_replaced_by_a_scalar_is_named_once() -> None:
    assert changed_fields({"schedule": {"time": "02:30"}}, {"schedule": "daily"}) == ("schedule",)


@given(DOCUMENTS)
def test_a_document_compared_with_itself_changed_nothing(document: dict[str, Any]) -> None:
    assert changed_fields(document, document) == ()


@given(DOCUMENTS, DOCUMENTS)
def test_the_changed_fields_are_the_same_either_way(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    assert changed_fields(before, after) == changed_fields(after, before)


@given(DOCUMENTS, DOCUMENTS)
def test_the_changed_fields_are_sorted_and_each_named_once(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    found = changed_fields(before, after)
    assert list(found) == sorted(set(found))


@given(DOCUMENTS)
def test_every_field_of_a_new_document_is_changed(document: dict[str, Any]) -> None:
    assert changed_fields({}, document) == tuple(sorted(leaves(document)))


@given(DOCUMENTS, st.data())
def test_setting_one_leaf_to_a_new_value_changes_that_field_alone(
    document: dict[str, Any], data: st.DataObject
) -> None:
    paths = sorted(leaves(document))
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    edited: dict[str, Any] = {**document}
    *parents, last = path.split(".")
    target = edited
    for key in parents:
        target[key] = {**target[key]}
        target = target[key]
    target[last] = ("a new value", target[last])  # a tuple: no generated value is one
    assert changed_fields(document, edited) == (path,)


@given(DOCUMENTS, DOCUMENTS)
def test_a_field_is_changed_exactly_when_its_leaves_differ(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    old, new = leaves(before), leaves(after)
    for path in changed_fields(before, after):
        # Named: the leaf is missing or different on one side, or a leaf on one side is a
        # mapping's field on the other.
        assert path not in old or path not in new or repr(old[path]) != repr(new[path])
    unchanged = set(old) & set(new) - set(changed_fields(before, after))
    for path in unchanged:
        assert repr(old[path]) == repr(new[path])
