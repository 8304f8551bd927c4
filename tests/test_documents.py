"""A file's path decides what it declares; every problem is reported with its line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.documents import MAX_ERRORS_PER_FILE, MAX_FILE_BYTES, Kind, kind_of, parse_file
from reconciler.models import (
    BackupTask,
    Compression,
    Keep,
    LocalDestination,
    NotificationEvent,
    NotificationStream,
    User,
)
from tests import configset

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "tasks"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("users.yaml", Kind.USER),
        ("tasks/1-x.yaml", Kind.TASK),
        ("tasks/team/nested.yml", Kind.TASK),
        ("servers/a.yaml", Kind.SERVER),
        ("destinations/a.yaml", Kind.DESTINATION),
        ("notifications/a.yaml", Kind.NOTIFICATION),
        ("task/typo.yaml", None),
        ("tasks.yaml", None),
    ],
)
def test_the_folder_decides_the_kind(path: str, kind: Kind | None) -> None:
    assert kind_of(path) == kind


def test_every_example_file_is_valid() -> None:
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        relative = path.relative_to(EXAMPLES).as_posix()
        parsed = parse_file(relative, path.read_bytes())
        assert parsed.errors == (), relative
        assert parsed.objects


def test_a_task_file_declares_one_task() -> None:
    parsed = parse_file("tasks/7.yaml", configset.task(7).encode())
    assert parsed.ok
    (task,) = parsed.objects
    assert isinstance(task, BackupTask)
    assert task.id == 7


def test_an_unquoted_time_is_understood_as_that_time() -> None:
    text = configset.task(7).replace("time: 02:30", "time: 10:30").encode()
    (task,) = parse_file("tasks/7.yaml", text).objects
    assert isinstance(task, BackupTask)
    assert task.schedule.time == "10:30"


def test_a_time_written_as_a_number_asks_for_quotes() -> None:
    text = configset.task(7).replace("time: 02:30", "time: 10.30").encode()
    (error,) = parse_file("tasks/7.yaml", text).errors
    assert error.field == "schedule.time"
    assert 'time: "10:30"' in error.message


def test_an_error_names_the_line_of_the_offending_key() -> None:
    text = b"id: 7\nuser_id: 1\nlabel: x\nremote_server_id: 1\nbackup_destination_id: 1\n"
    text += (
        b"source:\n  type: files\n  path: /srv\nschedule:\n  frequency: daily\n  time: '25:00'\n"
    )
    (error,) = parse_file("tasks/7.yaml", text).errors
    assert (error.path, error.line, error.field) == ("tasks/7.yaml", 11, "schedule.time")
    assert error.render().startswith("tasks/7.yaml:11: schedule.time: time must be HH:MM")


def test_an_unknown_key_is_an_error_not_ignored() -> None:
    text = (configset.task(7) + "colour: red\n").encode()
    (error,) = parse_file("tasks/7.yaml", text).errors
    assert error.field == "colour"
    assert "unknown field" in error.message


def test_storage_compression_defaults_to_zstd_level_3() -> None:
    (task,) = parse_file("tasks/7.yaml", configset.task(7).encode()).objects
    assert isinstance(task, BackupTask)
    assert (task.storage.compression, task.storage.compression_level) == (Compression.ZSTD, 3)


def test_a_compression_level_without_zstd_is_reported() -> None:
    text = configset.task(7) + "storage:\n  compression: none\n  compression_level: 9\n"
    (error,) = parse_file("tasks/7.yaml", text.encode()).errors
    assert error.field == "storage"
    assert "compression_level applies only to compression: zstd" in error.message


def test_a_compression_level_beyond_zstds_range_is_reported() -> None:
    text = configset.task(7) + "storage:\n  compression_level: 22\n"
    (error,) = parse_file("tasks/7.yaml", text.encode()).errors
    assert (error.field, error.line) == ("storage.compression_level", 13)


def test_storage_keep_is_read_with_its_rules() -> None:
    text = configset.task(7) + "storage:\n  keep: {daily: 7, weekly: 4, within: 1w3d}\n"
    (task,) = parse_file("tasks/7.yaml", text.encode()).objects
    assert isinstance(task, BackupTask)
    assert task.storage.keep == Keep(daily=7, weekly=4, within="1w3d")


@pytest.mark.parametrize(
    ("storage", "field", "line", "message"),
    [
        ("  keep:\n    within: 2x\n", "storage.keep.within", 14, "a duration is numbers"),
        ("  keep:\n    daily: 0\n", "storage.keep.daily", 14, "greater than or equal to 1"),
        ("  keep: {}\n", "storage.keep", 13, "keep needs at least one of last"),
        ("  keep: {last: null}\n", "storage.keep", 13, "keep needs at least one of last"),
        ("  keep:\n    month: 3\n", "storage.keep.month", 14, "unknown field"),
        (
            "  max_backups: 3\n  keep:\n    last: 2\n",
            "storage",
            12,
            "max_backups is keep.last (the newest N backups): give one of them, not both",
        ),
        (
            "  max_backups: 0\n  keep: {daily: 3}\n",
            "storage",
            12,
            "max_backups: 0 keeps every backup, which contradicts keep",
        ),
    ],
)
def test_a_bad_keep_policy_is_reported_with_its_line_and_field(
    storage: str, field: str, line: int, message: str
) -> None:
    text = configset.task(7) + "storage:\n" + storage
    (error,) = parse_file("tasks/7.yaml", text.encode()).errors
    assert (error.path, error.field, error.line) == ("tasks/7.yaml", field, line)
    assert message in error.message


def test_a_yes_in_a_boolean_field_means_true() -> None:
    text = (configset.task(7) + "paused: yes\n").encode()
    (task,) = parse_file("tasks/7.yaml", text).objects
    assert isinstance(task, BackupTask)
    assert task.paused is True


def test_a_no_in_a_text_field_stays_the_word() -> None:
    text = configset.task(7, label="no").replace("label: 'no'", "label: no").encode()
    (task,) = parse_file("tasks/7.yaml", text).objects
    assert isinstance(task, BackupTask)
    assert task.label == "no"


def test_a_syntax_error_is_reported_with_its_line() -> None:
    (error,) = parse_file("tasks/7.yaml", b"id: 7\nlabel: [unclosed\n").errors
    assert error.line is not None
    assert "YAML syntax error" in error.message


def test_an_empty_file_is_reported() -> None:
    (error,) = parse_file("tasks/7.yaml", b"").errors
    assert error.message == "the file is empty"


def test_a_list_where_a_mapping_belongs_is_reported() -> None:
    (error,) = parse_file("servers/a.yaml", b"- 1\n- 2\n").errors
    assert "expected a mapping" in error.message


def test_a_file_outside_the_layout_is_reported() -> None:
    (error,) = parse_file("task/7.yaml", configset.task(7).encode()).errors
    assert "not part of the config set layout" in error.message


def test_a_destination_error_names_the_yaml_key_not_the_union_tag() -> None:
    text = b"id: 1\nuser_id: 1\nlabel: d\ntype: local\npath: relative\n"
    (error,) = parse_file("destinations/d.yaml", text).errors
    assert (error.field, error.line) == ("path", 5)


def test_a_destination_of_unknown_type_is_reported() -> None:
    text = b"id: 1\nuser_id: 1\nlabel: d\ntype: ftp\npath: /x\n"
    (error,) = parse_file("destinations/d.yaml", text).errors
    assert "local" in error.message
    assert "sftp" in error.message


def test_a_local_destination_is_parsed() -> None:
    (destination,) = parse_file("destinations/d.yaml", configset.destination().encode()).objects
    assert isinstance(destination, LocalDestination)


def test_users_file_lists_users() -> None:
    users = parse_file("users.yaml", configset.USERS.encode()).objects
    assert [user.id for user in users if isinstance(user, User)] == [1, 2]


def test_a_user_id_used_twice_in_users_yaml_is_reported() -> None:
    text = configset.USERS.replace("id: 2", "id: 1").encode()
    parsed = parse_file("users.yaml", text)
    (error,) = parsed.errors
    assert (error.field, error.line) == ("1.id", 5)
    assert [user.id for user in parsed.objects] == [1]


def test_a_secret_value_in_place_of_a_reference_is_rejected() -> None:
    text = (configset.task(7) + "encryption_password: hunter2\n").encode()
    (error,) = parse_file("tasks/7.yaml", text).errors
    assert error.field == "encryption_password"


def test_a_storage_path_with_a_backslash_is_a_field_error() -> None:
    text = (configset.task(7) + "storage:\n  path: 'shop\\\\daily'\n").encode()
    (error,) = parse_file("tasks/7.yaml", text).errors
    assert (error.field, error.line) == ("storage.path", 13)
    assert "backslash" in error.message


def test_a_storage_path_keeps_being_normalised() -> None:
    text = (configset.task(7) + "storage:\n  path: /shop//daily/./\n").encode()
    (task,) = parse_file("tasks/7.yaml", text).objects
    assert isinstance(task, BackupTask)
    assert task.storage.path == "shop/daily"


@pytest.mark.parametrize(
    ("path", "shown", "reason"),
    [
        ("tasks/106-a\\b.yaml", "tasks/106-a\\b.yaml", "contains a backslash"),
        ("tasks/a\nb.yaml", "tasks/a\\nb.yaml", "unprintable character U+000A"),
        ("tasks/\udcff.yaml", "tasks/\\xff.yaml", "the byte 0xff, which is not UTF-8"),
        ("tasks/\u202egpj.yaml", "tasks/\\u202egpj.yaml", "unprintable character U+202E"),
        ("tasks/../7.yaml", "tasks/../7.yaml", "'..' component"),
    ],
)
def test_a_file_whose_name_breaks_the_path_rule_is_reported_and_not_parsed(
    path: str, shown: str, reason: str
) -> None:
    parsed = parse_file(path, configset.task(7).encode())
    (error,) = parsed.errors
    assert parsed.objects == ()
    assert (error.path, error.line) == (shown, None)
    assert reason in error.message


def test_a_file_over_the_size_limit_is_reported_and_not_parsed() -> None:
    text = configset.task(7).encode() + b"# " + b"x" * MAX_FILE_BYTES + b"\n"
    parsed = parse_file("tasks/7.yaml", text)
    (error,) = parsed.errors
    assert parsed.objects == ()
    assert error.message.startswith(f"the file is {len(text):,} bytes, over the limit")


def test_a_file_of_exactly_the_size_limit_is_parsed() -> None:
    text = configset.task(7).encode()
    text += b"#" * (MAX_FILE_BYTES - len(text) - 1) + b"\n"
    assert parse_file("tasks/7.yaml", text).ok


def test_a_non_utf8_file_names_the_byte_and_its_line() -> None:
    text = configset.task(7).replace("label: task 7", "label: caf\xe9").encode("latin-1")
    (error,) = parse_file("tasks/7.yaml", text).errors
    assert error.render() == (
        "tasks/7.yaml:3: (file): not UTF-8 text: byte 0xe9 cannot start or continue a character"
    )


def test_a_huge_list_of_bad_users_reports_the_first_problems_and_a_count() -> None:
    text = b"- x\n" * 3000
    errors = parse_file("users.yaml", text).errors
    assert len(errors) == MAX_ERRORS_PER_FILE + 1
    assert errors[MAX_ERRORS_PER_FILE - 1].line == MAX_ERRORS_PER_FILE
    assert (
        errors[-1].message == "2,900 more problems in this file, from this line on, are not listed"
    )
    assert errors[-1].line == MAX_ERRORS_PER_FILE + 1


def test_a_huge_value_is_not_repeated_whole_in_its_error() -> None:
    zone = "X" * 100_000
    text = configset.task(7).replace("time: 02:30", f"time: 02:30\n  timezone: {zone}").encode()
    (error,) = parse_file("tasks/7.yaml", text).errors
    assert error.field == "schedule.timezone"
    assert len(error.message) <= 300


def test_a_monitor_url_that_is_not_http_is_reported_on_its_line() -> None:
    text = b"id: 4\nuser_id: 1\nlabel: hc\ntype: healthchecks\nurl: ftp://hc.example.com/x\n"
    (error,) = parse_file("notifications/hc.yaml", text).errors
    assert (error.field, error.line) == ("url", 5)
    assert "the URL of a healthchecks stream must be an http:// or https:// URL" in error.message


def test_a_streams_events_are_read_from_yaml() -> None:
    text = b"id: 4\nuser_id: 1\nlabel: hook\ntype: webhook\nurl: json://h.example.com/\n"
    text += b"events: [failure, recovery]\nrepeat: yes\n"
    (stream,) = parse_file("notifications/hook.yaml", text).objects
    assert isinstance(stream, NotificationStream)
    assert stream.wanted_events() == {NotificationEvent.FAILURE, NotificationEvent.RECOVERY}
    assert stream.repeat


def test_verify_is_read_with_its_own_schedule() -> None:
    text = configset.task(7) + "verify:\n  schedule: {frequency: weekly, time: '05:00'}\n"
    (task,) = parse_file("tasks/7.yaml", text.encode()).objects
    assert isinstance(task, BackupTask)
    assert task.verify is not None
    assert (task.verify.schedule.time, task.verify.schedule.run_weekday) == ("05:00", "sunday")


@pytest.mark.parametrize(
    ("verify", "field", "line", "message"),
    [
        ("verify: {}\n", "verify.schedule", 12, "required field is missing"),
        ("verify:\n  schedule: {frequency: daily}\n", "verify.schedule", 13, "a schedule needs"),
        (
            "verify:\n  schedule: {custom_cron: '0 3 * * *', timezone: Mars/Olympus}\n",
            "verify.schedule.timezone",
            13,
            "",
        ),
        (
            "verify:\n  schedule: {frequency: daily, time: '01:00'}\n  every: daily\n",
            "verify.every",
            14,
            "unknown field",
        ),
    ],
)
def test_a_bad_verify_section_is_reported_with_its_line_and_field(
    verify: str, field: str, line: int, message: str
) -> None:
    text = configset.task(7) + verify
    (error,) = parse_file("tasks/7.yaml", text.encode()).errors
    assert (error.field, error.line) == (field, line)
    assert message in error.message
