"""Reading hand-written YAML without YAML 1.1 surprises, and finding the line of a key.

PyYAML resolves plain scalars with YAML 1.1 rules: `10:30` becomes the sexagesimal number 630,
`no` becomes False, `0755` becomes 493 and `2024-01-01` a date. A person writing a backup schedule
means none of those, so this loader resolves only what YAML 1.2's core schema does (true/false,
null, decimal and hex integers without leading zeros, floats) and leaves everything else a
string, which the models then validate or reject with a message that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - libyaml is part of PyYAML's wheels
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class CoreSchemaLoader(_BaseLoader):
    """libyaml's parser with YAML 1.2 core schema scalar resolution."""


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


@dataclass(frozen=True, slots=True)
class YamlSyntaxError(Exception):
    line: int | None
    message: str


def load(text: bytes | str) -> Any:
    """Parse one YAML document; a syntax problem becomes a YamlSyntaxError with its line."""
    try:
        return yaml.load(text, Loader=CoreSchemaLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(line, f"YAML syntax error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, f"YAML error: {exc}") from exc


def line_of(text: bytes | str, location: Sequence[str | int]) -> int | None:
    """1-based line of the deepest key or item of `location` that exists in the document.

    Used only when something is wrong, so composing the node tree again is fine.
    """
    try:
        node = yaml.compose(text, Loader=CoreSchemaLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for step in location:
        child = _child(node, step)
        if child is None:
            break
        key_line, node = child
        line = key_line
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
