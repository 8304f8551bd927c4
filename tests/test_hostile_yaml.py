"""Hostile config files: whatever the bytes and the name, the parse the daemon uses answers with
located config errors, never an exception, a hang or unbounded memory.

Every property goes through `documents.parse_file` (what the daemon, `validate`, `plan` and the
API parse with) or `loader.parse_files` (the daemon's batch entry point, worker processes and
all), never through a helper of its own.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler import yamlsyntax
from reconciler.documents import MAX_FILE_BYTES, ParsedFile, parse_file
from reconciler.loader import PARALLEL_THRESHOLD, parse_directory, parse_files
from reconciler.models import MAX_ID, BackupTask
from tests import configset

TASK = configset.task(7, description="nightly", storage={"path": "shop", "max_backups": 3})
_BREAKS = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")

# What people and attackers put in YAML: structure, anchors, tags, odd bytes and encodings.
SNIPPETS = [
    "\n",
    ": ",
    "- ",
    "  ",
    "\t",
    "\r",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    "#",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!int x",
    "!!float y",
    "!!timestamp z",
    "!!binary aGk=",
    "!!python/object:os.system x",
    "!local ",
    "? [a, b]\n: 1\n",
    "label: again\n",
    "id: 99999999999999999999999\n",
    "\x00",
    "\x1b",
    "\ufeff",
    "\u2028",
    "\x85",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
]
RAW_SNIPPETS = [b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf"]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1"]


def assert_reported(parsed: ParsedFile, text: bytes) -> None:
    """The contract of every parse of a well-named file under the size limit."""
    # Lines as YAML counts them, in the text as UTF-8 with its undecodable bytes replaced (as
    # latin-1, a UTF-8 U+2028 would be three characters and no line break).
    decoded = text.decode("utf-8", "replace")
    last_line = len(_BREAKS.findall(decoded)) + 1
    for error in parsed.errors:
        assert error.line is not None, error
        assert 1 <= error.line <= last_line, (error, last_line)
        assert error.message
        assert "\n" not in error.message
        assert "\r" not in error.message
        assert len(error.message) <= 400
        assert error.path.isprintable()
    assert bool(parsed.objects) or bool(parsed.errors)
    for document in parsed.objects:
        assert 0 < document.id <= MAX_ID


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid task file, cut, spliced and salted with hostile snippets."""
    text = TASK.encode()
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            piece = draw(st.sampled_from(SNIPPETS)).encode()
        elif choice == 1:
            piece = draw(st.sampled_from(RAW_SNIPPETS))
        elif choice == 2:
            piece = draw(st.binary(max_size=8))
        else:
            end = draw(st.integers(at, min(len(text), at + 40)))
            text, piece = text[:at] + text[end:], b""
        text = text[:at] + piece + text[at:]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@example(TASK.encode() + b"paused: !!int x\n")
@example(TASK.encode() + b"label: a\x00b\n")
@example(TASK.encode() + b"label: again\n")
def test_a_mutated_task_file_gives_located_errors_or_a_task(text: bytes) -> None:
    assert_reported(parse_file("tasks/7.yaml", text), text)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
@example("a\u2028".encode() * 20 + b"\xff\n")  # YAML's line breaks before a bad byte
def test_arbitrary_bytes_give_located_errors(text: bytes) -> None:
    assert_reported(parse_file("tasks/7.yaml", text), text)


JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["id", "user_id", "label", "source", "schedule", "storage", "notification_stream_ids"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_LIKE, max_size=4))
@example({"id": 10**20})
@example({"schedule": {"time": 10**30}, "storage": [None]})
def test_fields_of_the_wrong_type_are_field_errors(fields: dict[str, Any]) -> None:
    data = {**yaml.safe_load(TASK), **fields}
    text = yaml.safe_dump(data, allow_unicode=True).encode()
    parsed = parse_file("tasks/7.yaml", text)
    assert_reported(parsed, text)
    for task in parsed.objects:
        assert isinstance(task, BackupTask)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ENCODINGS), st.text(max_size=30))
def test_a_file_in_another_encoding_is_refused_by_its_byte_or_read_as_written(
    encoding: str, label: str
) -> None:
    text = configset.task(7, label=label).encode(encoding, errors="replace")
    parsed = parse_file("tasks/7.yaml", text)
    assert_reported(parsed, text)
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        (error,) = parsed.errors
        assert error.message.startswith("not UTF-8 text")
        assert re.search(r"0x[0-9a-f]{2}", error.message)


def billion_laughs(levels: int, width: int) -> bytes:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [
        f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]"
        for level in range(1, levels)
    ]
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(2, 40))
def test_an_alias_bomb_is_refused_in_bounded_time_and_memory(levels: int, width: int) -> None:
    text = billion_laughs(levels, width)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        parsed = parse_file("tasks/7.yaml", text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5  # unbounded expansion would take years
    assert peak < 64 * 1024 * 1024
    assert_reported(parsed, text)
    expanded = sum(width**level for level in range(1, levels + 1))
    if expanded > yamlsyntax.MAX_VALUES:
        assert any("aliases are expanded" in error.message for error in parsed.errors)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.sampled_from(["flow list", "flow map", "block map"]))
def test_deep_nesting_is_refused_with_a_line(depth: int, shape: str) -> None:
    if shape == "flow list":
        text = ("[" * depth + "]" * depth).encode()
    elif shape == "flow map":
        text = ("{a: " * depth + "1" + "}" * depth).encode()
    else:  # indentation grows with depth: 1,000 levels are half the size limit
        depth = min(depth, 1000)
        text = "".join(f"{' ' * level}a:\n" for level in range(depth)).encode() + b" " * depth
        text += b"b: 1\n"
    parsed = parse_file("tasks/7.yaml", text)
    assert_reported(parsed, text)
    if depth > yamlsyntax.MAX_DEPTH + 1:
        assert parsed.objects == ()


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_a_file_at_the_size_limit_is_parsed_or_refused_unparsed(offset: int) -> None:
    text = b"#" * (MAX_FILE_BYTES + offset)
    (error,) = parse_file("users.yaml", text).errors
    if offset > 0:
        assert "over the limit" in error.message
    else:
        assert error.message == "the file is empty"


@pytest.mark.parametrize("filler", [b"1,", b"- x\n", b"a: 1\n"])
def test_a_full_size_file_of_tiny_values_is_refused_in_bounded_time(filler: bytes) -> None:
    text = filler * ((MAX_FILE_BYTES - 2) // len(filler))
    if filler == b"1,":
        text = b"[" + text + b"]"
    started = time.perf_counter()
    parsed = parse_file("users.yaml", text)
    assert time.perf_counter() - started < 10
    (error,) = parsed.errors
    assert error.line is not None


NAMES = st.text(alphabet=st.characters(codec=None, exclude_characters="/"), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(NAMES)
@example("106-a\\b")
@example("\udcff")
@example("a\nb")
def test_any_file_name_is_parsed_or_reported_in_printable_text(name: str) -> None:
    parsed = parse_file(f"tasks/{name}.yaml", TASK.encode())
    for error in parsed.errors:
        assert error.path.isprintable()
        error.path.encode("utf-8")  # /api/sync and the logs can carry it
        assert "\n" not in error.message
    if parsed.objects:
        assert f"tasks/{name}.yaml".isprintable()
        assert "\\" not in name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=5, unique=True))
def test_any_file_name_on_disk_is_read_or_refused(names: list[bytes]) -> None:
    usable = [name for name in names if b"/" not in name and b"\x00" not in name]
    usable = [name for name in usable if not name.startswith(b".")]  # hidden: skipped
    with tempfile.TemporaryDirectory() as folder:
        tasks = Path(folder) / "tasks"
        tasks.mkdir()
        for name in usable:
            with open(os.path.join(os.fsencode(tasks), name + b".yaml"), "wb") as file:
                file.write(TASK.encode())
        files = parse_directory(Path(folder))
        assert len(files) == len(usable)
        for parsed in files.values():
            assert parsed.ok or parsed.errors[0].message.startswith("the file name")
            for error in parsed.errors:
                assert error.path.isprintable()


def test_the_daemons_batch_parse_gives_the_same_reports_as_one_file_at_a_time() -> None:
    hostile = [
        TASK.encode() + b"paused: !!int x\n",
        TASK.encode() + b"label: again\n",
        billion_laughs(30, 10),
        "id: 1\n".encode("utf-16"),
        b"[" * 500 + b"]" * 500,
        b"- x\n" * 500,
        b"\x00",
        b"a: &a [*a]\n",
    ]
    contents = {
        f"tasks/{index}.yaml": hostile[index % len(hostile)]
        for index in range(PARALLEL_THRESHOLD + 8)
    }
    in_workers = parse_files(contents, workers=2)
    for path, text in contents.items():
        assert in_workers[path].errors == parse_file(path, text).errors
        assert_reported(in_workers[path], text)
