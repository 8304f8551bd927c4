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


def test_a_duplicate_key_is_an_error_on_the_line_of_the_duplicate() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(b"id: 1\nlabel: first\nschedule:\n  time: '01:00'\nlabel: second\n")
    assert caught.value.line == 5
    assert caught.value.message == "duplicate key 'label' (first given on line 2)"


def test_a_duplicate_key_in_a_nested_mapping_is_an_error() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(b"schedule:\n  time: '01:00'\n  'time': '02:00'\n")
    assert caught.value.line == 3


def test_a_byte_that_is_not_utf8_is_named_with_its_line() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(b"id: 1\nlabel: caf\xe9\n")
    assert caught.value.line == 2
    assert caught.value.message == "not UTF-8 text: byte 0xe9 cannot start or continue a character"


def test_a_utf16_file_is_refused_by_name() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load("id: 1\n".encode("utf-16"))
    assert caught.value.line == 1
    assert "UTF-16" in caught.value.message
    assert "save it as UTF-8" in caught.value.message


def test_a_utf8_byte_order_mark_is_accepted() -> None:
    assert yamlsyntax.load(b"\xef\xbb\xbfid: 1\n") == {"id": 1}


def test_a_nul_character_is_reported_on_its_line_in_one_line() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(b"id: 1\n\nlabel: a\x00b\n")
    assert caught.value.line == 3
    assert caught.value.message == "the control character U+0000 is not allowed in YAML"


@pytest.mark.parametrize(
    "value", ["!!float x", "!!int x", "!!timestamp x", "!!bool maybe", "!!null x"]
)
def test_an_explicit_tag_that_does_not_fit_its_value_is_an_error_not_a_crash(value: str) -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(f"id: 1\nvalue: {value}\n".encode())
    assert caught.value.line == 2


@pytest.mark.parametrize("tag", ["!!binary aGk=", "!!set {a}", "!!omap [a: 1]", "!local x"])
def test_tags_beyond_the_core_schema_are_refused(tag: str) -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(f"id: 1\nvalue: {tag}\n".encode())
    assert caught.value.line == 2
    assert "not supported" in caught.value.message


def test_core_schema_tags_are_honoured() -> None:
    text = b"a: !!str 12\nb: !!int '7'\nc: !!float 1.5\nd: !!bool true\ne: !!null ~\n"
    assert yamlsyntax.load(text) == {"a": "12", "b": 7, "c": 1.5, "d": True, "e": None}


def test_nesting_deeper_than_the_limit_is_an_error() -> None:
    depth = yamlsyntax.MAX_DEPTH + 1
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(("[" * depth + "]" * depth).encode())
    assert caught.value.line == 1
    assert f"nested more than {yamlsyntax.MAX_DEPTH} levels deep" in caught.value.message


def test_nesting_up_to_the_limit_is_accepted() -> None:
    depth = yamlsyntax.MAX_DEPTH
    assert yamlsyntax.load(("[" * depth + "]" * depth).encode()) is not None


def billion_laughs(levels: int, width: int = 10) -> bytes:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return ("\n".join(lines) + "\n").encode()


def test_an_alias_bomb_is_refused_at_the_line_where_it_grows_past_the_limit() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(billion_laughs(30))
    assert caught.value.line == 6  # 10 ** 6 values: the first level over 200,000
    assert "aliases" in caught.value.message


def test_a_few_aliases_are_fine() -> None:
    loaded = yamlsyntax.load(b"a: &x [1, 2]\nb: *x\n")
    assert loaded == {"a": [1, 2], "b": [1, 2]}


def test_an_alias_inside_its_own_anchor_is_an_error() -> None:
    with pytest.raises(yamlsyntax.YamlSyntaxError) as caught:
        yamlsyntax.load(b"id: 1\nloop: &a [1, *a]\n")
    assert caught.value.line == 2
    assert "contains itself" in caught.value.message
