"""Hand-written YAML is read as a person means it, not with YAML 1.1's surprises."""

from __future__ import annotations

import pytest

from reconciler import yamlsyntax


def test_an_unquoted_time_stays_the_time_written() -> None:
    assert yamlsyntax.load(b"time: 10:30") == {"time": "10:30"}


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "OFF"])
def test_yes_no_on_off_stay_words(word: str) -> None:
    assert yamlsyntax.load(f"label: {word}".encode()) == {"label": word}


def test_true_and_false_are_booleans() -> None:
    assert yamlsyntax.load(b"a: true\nb: False") == {"a": True, "b": False}


def test_an_octal_looking_number_is_not_read_as_octal() -> None:
    assert yamlsyntax.load(b"mode: 0755") == {"mode": "0755"}


def test_a_date_stays_a_string() -> None:
    assert yamlsyntax.load(b"day: 2024-01-01") == {"day": "2024-01-01"}


def test_decimal_hex_float_and_null_resolve_as_in_yaml_1_2() -> None:
    loaded = yamlsyntax.load(b"a: 12\nb: 0x1f\nc: 1.5\nd: ~\ne:\nf: -3")
    assert loaded == {"a": 12, "b": 31, "c": 1.5, "d": None, "e": None, "f": -3}


def test_a_syntax_error_names_its_line() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(b"a: 1\nb: [1, 2\nc: 3\n")
    assert caught.value.line == 3
    assert "YAML syntax error" in caught.value.message


def test_line_of_finds_a_nested_key() -> None:
    text = b"id: 1\nschedule:\n  frequency: daily\n  time: 25:00\n"
    assert yamlsyntax.line_of(text, ("schedule", "time")) == 4


def test_line_of_finds_a_list_item() -> None:
    text = b"- id: 1\n- id: 2\n  email: x\n"
    assert yamlsyntax.line_of(text, (1, "email")) == 3


def test_line_of_a_missing_key_is_its_nearest_parent() -> None:
    text = b"id: 1\nsource:\n  type: files\n"
    assert yamlsyntax.line_of(text, ("source", "path")) == 2


def test_load_many_reports_errors_without_raising() -> None:
    results = yamlsyntax.load_many([b"a: 1", b"a: [", b"b: 2"])
    assert results[0] == ({"a": 1}, None, None)
    assert results[1][0] is None
    assert results[1][2] is not None
    assert results[2] == ({"b": 2}, None, None)
