"""Reading hand-written YAML without YAML 1.1 surprises, and finding the line of a key.

PyYAML resolves plain scalars with YAML 1.1 rules: `10:30` becomes the sexagesimal number 630,
`no` becomes False, `0755` becomes 493 and `2024-01-01` a date. A person writing a backup schedule
means none of those, so this loader resolves only what YAML 1.2's core schema does (true/false,
null, decimal and hex integers without leading zeros, floats) and leaves everything else a
string, which the models then validate or reject with a message that names the field.

A config file is hostile until parsed, so `load` also refuses, with the line: text that is not
UTF-8 (the offending byte is named), control characters, duplicate keys (PyYAML silently keeps the
last one), tags outside the core schema (`!!binary`, `!!set`, `!local`: no config field needs
them) or that do not fit their value (`!!int x`), nesting deeper than MAX_DEPTH, and documents
whose aliases expand to more than MAX_VALUES values (a "billion laughs" file is a few hundred
bytes). Those bounds are checked on libyaml's event stream, before any node is built, so a
hostile file is refused after the few lines that make it hostile.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - libyaml is part of PyYAML's wheels
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


MAX_DEPTH = 32
"""Lists and mappings nested deeper than this are refused (a config file needs about 4)."""
MAX_VALUES = 200_000
"""A document may hold at most this many values (scalars, lists, mappings), aliases expanded."""

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_LINE_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


class CoreSchemaLoader(_BaseLoader):
    """libyaml's parser with YAML 1.2 core schema scalar resolution, refusing duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise YamlSyntaxError(_line(node), "the tag !!map needs a mapping")
        mapping: dict[Any, Any] = {}
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = _line(key_node)
            if not isinstance(key, Hashable):
                raise YamlSyntaxError(line, "a list or a mapping cannot be a mapping key")
            if key in lines:
                raise YamlSyntaxError(
                    line, f"duplicate key {short_repr(key)} (first given on line {lines[key]})"
                )
            lines[key] = line
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


CoreSchemaLoader.yaml_implicit_resolvers = {}
_CORE_RESOLVERS: list[tuple[str, str, str]] = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN\x00"),
]
for _tag, _pattern, _first in _CORE_RESOLVERS:
    CoreSchemaLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
# An empty plain scalar has no first character; PyYAML looks it up under None.
CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null",
    re.compile(r"^$"),
    [None],
)
# What an explicitly tagged scalar must look like: `!!int x` would make PyYAML raise ValueError.
_SCALAR_FORMS = {tag: re.compile(pattern) for tag, pattern, _ in _CORE_RESOLVERS}


@dataclass(frozen=True, slots=True)
class YamlSyntaxError(Exception):
    line: int | None
    message: str


def load(text: bytes | str) -> Any:
    """Parse one YAML document; any problem becomes a YamlSyntaxError with its line."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    _check_utf8(data)
    loader = CoreSchemaLoader(data)
    try:
        _check_events(data)
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        # libyaml's position is a byte offset; the text is known to be UTF-8 by now.
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        raise YamlSyntaxError(
            _line_at(data, exc.position),
            f"the control character U+{code:04X} is not allowed in YAML",
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # At the end of the stream libyaml counts one line more than the file has.
        mark_line = None if mark is None else min(mark.line + 1, _line_at(data, len(data)))
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(mark_line, f"YAML syntax error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, f"YAML error: {' '.join(str(exc).split())}") from exc
    finally:
        loader.dispose()


def _check_utf8(data: bytes) -> None:
    if data.startswith(_UTF16_BOMS):
        raise YamlSyntaxError(
            1,
            f"not UTF-8 text: the file starts with the UTF-16 byte order mark "
            f"0x{data[0]:02x} 0x{data[1]:02x}; save it as UTF-8",
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(
            _line_at(data, exc.start),
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot start or continue a character",
        ) from exc


def _line_at(data: bytes, offset: int) -> int:
    """The 1-based line of a byte offset, counting line breaks as YAML (and libyaml) does."""
    return len(_LINE_BREAKS.findall(data[:offset].decode("utf-8", "replace"))) + 1


@dataclass(slots=True)
class _Open:
    """A list or mapping whose end has not been parsed yet."""

    anchor: str | None
    values: int = 1
    height: int = 1


def _check_events(data: bytes) -> None:
    """Tags, depth and alias-expanded size, from libyaml's event stream before any node exists.

    An alias adds the expanded size of its anchor, remembered when the anchor's value ended, so a
    billion laughs is refused after reading a few lines, at the first value that grows too big.
    Scalars are most events: they take the shortest path.
    """
    loader = CoreSchemaLoader(data)
    try:
        finished: dict[str, tuple[int, int]] = {}  # anchor -> (values, height), aliases expanded
        stack: list[_Open] = []
        while (event := loader.get_event()) is not None:
            if isinstance(event, yaml.ScalarEvent):
                if event.tag is not None:
                    _check_tag(event)
                if event.anchor is not None:
                    finished[event.anchor] = (1, 1)
                if stack:
                    _add(stack, event, 1, 1)
            elif isinstance(event, yaml.CollectionStartEvent):
                if event.tag is not None:
                    _check_tag(event)
                if len(stack) >= MAX_DEPTH:
                    raise _too_deep(event)
                stack.append(_Open(event.anchor))
            elif isinstance(event, yaml.CollectionEndEvent):
                closed = stack.pop()
                if closed.anchor is not None:
                    finished[closed.anchor] = (closed.values, closed.height)
                if stack:
                    _add(stack, event, closed.values, closed.height)
            elif isinstance(event, yaml.AliasEvent):
                if any(open_.anchor == event.anchor for open_ in stack):
                    raise YamlSyntaxError(
                        _event_line(event),
                        "an alias refers to a list or mapping that contains itself",
                    )
                # An undefined alias is the composer's error to report, with its own message.
                values, height = finished.get(event.anchor or "", (1, 1))
                if stack:
                    _add(stack, event, values, height)
    finally:
        loader.dispose()


def _add(stack: list[_Open], event: yaml.Event, values: int, height: int) -> None:
    parent = stack[-1]
    parent.values += values
    if parent.values > MAX_VALUES:
        raise YamlSyntaxError(
            _event_line(event), f"more than {MAX_VALUES:,} values once aliases are expanded"
        )
    if height >= parent.height:
        parent.height = height + 1
        if len(stack) - 1 + parent.height > MAX_DEPTH:
            raise _too_deep(event)


def _event_line(event: yaml.Event) -> int:
    return 1 if event.start_mark is None else int(event.start_mark.line) + 1


def _check_tag(event: yaml.ScalarEvent | yaml.CollectionStartEvent) -> None:
    """Only the core schema's tags, on values that fit them; untagged values always do."""
    tag = event.tag
    if tag is None or tag == "!":
        return
    if isinstance(event, yaml.ScalarEvent):
        form = _SCALAR_FORMS.get(tag)
        if form is not None and not form.match(event.value):
            kind = tag.rsplit(":", 1)[-1]
            raise YamlSyntaxError(
                _event_line(event), f"{short_repr(event.value)} is not a valid {kind}"
            )
        if form is not None or tag == _STR:
            return
    elif tag == (_SEQ if isinstance(event, yaml.SequenceStartEvent) else _MAP):
        return
    raise YamlSyntaxError(
        _event_line(event),
        f"the tag {short_repr(tag)} is not supported here: config files use plain YAML values",
    )


def _too_deep(event: yaml.Event) -> YamlSyntaxError:
    return YamlSyntaxError(
        _event_line(event), f"lists and mappings are nested more than {MAX_DEPTH} levels deep"
    )


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def short_repr(value: object) -> str:
    """A value's repr for a message, cut so a huge key cannot make a huge error."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def line_of(text: bytes | str, location: Sequence[str | int]) -> int | None:
    """1-based line of the deepest key or item of `location` that exists in the document."""
    return lines_of(text, [location])[0]


def lines_of(text: bytes | str, locations: Sequence[Sequence[str | int]]) -> list[int | None]:
    """`line_of` for many locations, composing the document once.

    Used only when something is wrong, so composing the node tree again is fine.
    """
    if not locations:
        return []
    try:
        node = yaml.compose(text, Loader=CoreSchemaLoader)
    except yaml.YAMLError:
        node = None
    if node is None:
        return [None] * len(locations)
    return [_line_in(node, location) for location in locations]


def _line_in(root: yaml.Node, location: Sequence[str | int]) -> int:
    node = root
    line = _line(root)
    for step in location:
        child = _child(node, step)
        if child is None:
            break
        line, node = child
    return line


def _child(node: yaml.Node, step: str | int) -> tuple[int, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                return key.start_mark.line + 1, value
    if (
        isinstance(node, yaml.SequenceNode)
        and isinstance(step, int)
        and 0 <= step < len(node.value)
    ):
        item: yaml.Node = node.value[step]
        return item.start_mark.line + 1, item
    return None


def load_many(texts: Sequence[bytes]) -> list[tuple[Any, int | None, str | None]]:
    """`load` over a batch, as picklable (data, error line, error message) triples.

    The unit of work handed to parser processes: plain values pickle cheaply, exceptions less so.
    """
    results: list[tuple[Any, int | None, str | None]] = []
    for text in texts:
        try:
            results.append((load(text), None, None))
        except YamlSyntaxError as exc:
            results.append((None, exc.line, exc.message))
    return results


def _serve_worker() -> None:
    """`python -m reconciler.yamlsyntax`: read a pickled list of batches, answer batch by batch.

    The whole input is read before anything is written, so a parent that writes everything and
    then reads cannot deadlock on full pipes.
    """
    import pickle
    import sys

    batches: list[list[bytes]] = pickle.load(sys.stdin.buffer)  # noqa: S301 - our own parent
    for batch in batches:
        pickle.dump(load_many(batch), sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    _serve_worker()
