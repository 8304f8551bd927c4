"""Task file edits keep what people wrote: golden files for comments, order, quoting and blanks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import documents, yamlsyntax
from reconciler.models import BackupTask
from reconciler.taskfile import (
    DELETE,
    Edits,
    TaskFileError,
    edit_task,
    edit_task_text,
    load_task_data,
    new_task_text,
    slugify,
    task_file_path,
)

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).parent.parent / "examples" / "tasks" / "tasks"

GOLDEN_EDITS: dict[str, Edits] = {
    "label-time-description": {
        ("label",): "Shop DB",
        ("description",): "MariaDB dump",
        ("schedule", "time"): "02:00",
        ("schedule", "timezone"): "UTC",
    },
    "secret-and-lists": {
        ("encryption_password",): {"secret": "task-7-encryption-password-ab12cd34"},
        ("source", "excluded_tables"): ["cache", "sessions", "logs"],
        ("notification_stream_ids",): [1, 3],
    },
    "clear-optional-fields": {
        ("encryption_password",): DELETE,
        ("schedule", "weekday"): DELETE,
        ("schedule", "frequency"): "daily",
        ("storage", "max_backups"): DELETE,
        ("source", "excluded_tables"): DELETE,
    },
}


@pytest.mark.parametrize("case", sorted(GOLDEN_EDITS))
def test_an_edit_changes_only_the_edited_lines_of_a_commented_file(case: str) -> None:
    original = (GOLDEN / "commented.yaml").read_text()
    expected = (GOLDEN / f"commented.{case}.yaml").read_text()
    assert edit_task_text(original, GOLDEN_EDITS[case]) == expected


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_an_empty_edit_gives_back_the_file_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    assert edit_task_text(text, {}) == text


def test_the_golden_input_round_trips_byte_for_byte() -> None:
    text = (GOLDEN / "commented.yaml").read_text()
    assert edit_task_text(text, {}) == text


def test_an_end_of_line_comment_stays_with_its_changed_value() -> None:
    text = (EXAMPLES / "3-etc-every-6-hours.yaml").read_text()
    edited = edit_task_text(text, {("storage", "max_backups"): 3})
    assert "  max_backups: 3   # keep everything\n" in edited
    assert edited.replace("max_backups: 3", "max_backups: 0") == text


def test_a_new_key_goes_after_its_conventional_neighbour() -> None:
    text = (EXAMPLES / "3-etc-every-6-hours.yaml").read_text()
    edited = edit_task_text(text, {("description",): "All of /etc"})
    assert "label: /etc every six hours\ndescription: All of /etc\nremote_server_id: 1\n" in edited


def test_removing_the_last_key_of_a_section_removes_the_section() -> None:
    text = "id: 1\nstorage:\n  path: x\nlabel: y\n"
    assert edit_task_text(text, {("storage", "path"): DELETE}) == "id: 1\nlabel: y\n"


def test_deleting_a_missing_key_changes_nothing() -> None:
    text = (EXAMPLES / "3-etc-every-6-hours.yaml").read_text()
    assert edit_task_text(text, {("encryption_password",): DELETE}) == text


@pytest.mark.parametrize("value", ["10:30", "yes", "off", "0755", "2024-01-01", "1e3", "null"])
def test_a_string_that_looks_like_another_type_reads_back_as_that_string_in_every_loader(
    value: str,
) -> None:
    edited = edit_task_text("id: 1\nlabel: x\n", {("label",): value})
    assert load_task_data(edited)["label"] == value
    assert yamlsyntax.load(edited)["label"] == value
    assert yaml.safe_load(edited)["label"] == value  # YAML 1.1, as many other tools read it


def test_a_time_is_written_double_quoted() -> None:
    edited = edit_task_text("id: 1\nschedule:\n  time: '01:00'\n", {("schedule", "time"): "10:30"})
    assert edited == "id: 1\nschedule:\n  time: '10:30'\n"
    added = edit_task_text("id: 1\n", {("schedule", "time"): "10:30"})
    assert added == 'id: 1\nschedule:\n  time: "10:30"\n'


def test_a_quoted_value_keeps_its_quote_style() -> None:
    edited = edit_task_text("id: 1\nlabel: 'x'\n", {("label",): "plain words"})
    assert edited == "id: 1\nlabel: 'plain words'\n"


def test_a_flow_list_stays_a_flow_list_and_a_block_list_a_block_list() -> None:
    text = "flow: [1]\nblock:\n- a\n"
    edited = edit_task_text(text, {("flow",): [1, 2], ("block",): ["a", "b"]})
    assert edited == "flow: [1, 2]\nblock:\n- a\n- b\n"


def test_an_explicit_document_start_is_kept() -> None:
    text = "---\nid: 1\nlabel: x\n"
    assert edit_task_text(text, {("label",): "y"}) == "---\nid: 1\nlabel: y\n"


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "a: [\n", "id: 1\n---\nid: 2\n"])
def test_text_that_is_not_one_mapping_is_refused(text: str) -> None:
    with pytest.raises(TaskFileError):
        edit_task_text(text, {("label",): "x"})


def test_a_new_file_lists_keys_in_the_conventional_order() -> None:
    text = new_task_text(
        {
            "schedule": {"time": "10:30", "frequency": "daily"},
            "label": "Nightly",
            "source": {"path": "/srv", "type": "files"},
            "id": 9,
            "user_id": 1,
            "remote_server_id": 1,
            "backup_destination_id": 1,
            "notification_stream_ids": [1, 2],
            "description": None,
        }
    )
    assert text == (
        "id: 9\nuser_id: 1\nlabel: Nightly\nremote_server_id: 1\nbackup_destination_id: 1\n"
        "source:\n  type: files\n  path: /srv\nschedule:\n  frequency: daily\n"
        '  time: "10:30"\nnotification_stream_ids: [1, 2]\n'
    )
    parsed = documents.parse_file("tasks/9-nightly.yaml", text.encode())
    assert parsed.ok
    assert isinstance(parsed.objects[0], BackupTask)


@pytest.mark.parametrize(
    ("label", "slug"),
    [("Nightly DB dump!", "nightly-db-dump"), ("   ", "task"), ("Ünïcode / ../etc", "n-code-etc")],
)
def test_a_slug_is_safe_in_a_file_name(label: str, slug: str) -> None:
    assert slugify(label) == slug


def test_a_new_task_file_is_named_by_id_and_slug() -> None:
    assert task_file_path(12, "Home directories") == "tasks/12-home-directories.yaml"


_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)
_scalars: st.SearchStrategy[Any] = st.one_of(_text, st.integers(-(10**6), 10**6), st.booleans())


@settings(deadline=None)  # timing varies under xdist; correctness does not
@given(
    example=st.sampled_from(sorted(EXAMPLES.glob("*.yaml"))),
    key=st.sampled_from(["label", "description", "new_key"]),
    value=_scalars,
)
def test_an_edited_value_reads_back_exactly_and_nothing_else_changes(
    example: Path, key: str, value: Any
) -> None:
    text = example.read_text()
    before = load_task_data(text)
    after = load_task_data(edit_task_text(text, {(key,): value}))
    assert after.pop(key) == value
    before.pop(key, None)
    assert after == before


@settings(deadline=None)  # timing varies under xdist; correctness does not
@given(
    example=st.sampled_from(sorted(EXAMPLES.glob("*.yaml"))),
    path=st.sampled_from(
        [("schedule", "time"), ("source", "path"), ("storage", "path"), ("storage", "max_backups")]
    ),
    value=_scalars,
)
def test_a_nested_edit_reads_back_exactly_and_keeps_its_siblings(
    example: Path, path: tuple[str, str], value: Any
) -> None:
    text = example.read_text()
    before = load_task_data(text)
    after = load_task_data(edit_task_text(text, {path: value}))
    section, key = path
    assert after[section].pop(key) == value
    before.setdefault(section, {}).pop(key, None)
    assert after == before


@settings(deadline=None)  # timing varies under xdist; correctness does not
@given(
    example=st.sampled_from(sorted(EXAMPLES.glob("*.yaml"))),
    edits=st.dictionaries(
        st.sampled_from(
            [("label",), ("description",), ("paused",), ("schedule", "time"), ("storage", "path")]
        ),
        st.one_of(_scalars, st.just(DELETE)),
        max_size=4,
    ),
)
def test_an_edit_names_exactly_the_top_level_keys_whose_values_it_changed(
    example: Path, edits: Edits
) -> None:
    """What a second load of the old and new text would say, from the one load the edit made."""
    text = example.read_text()
    edited = edit_task(text, edits)
    before, after = load_task_data(text), load_task_data(edited.text)
    assert edited.text == edit_task_text(text, edits)
    keys = dict.fromkeys([*after, *before])
    assert list(edited.changed) == [key for key in keys if before.get(key) != after.get(key)]
