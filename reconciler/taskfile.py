"""Edit the YAML text of a task file the way a careful person would: change only what was asked.

Pure text in, text out (ruamel.yaml round-trip). Comments, key order, quoting, blank lines and
indentation of everything not edited survive. Two kinds of edit, keyed by a path of mapping keys:

- a leaf path (`("schedule", "time")`) sets one value and leaves its siblings alone;
- a mapping value (`{"secret": "k"}`) makes the mapping at that path hold exactly those keys;
- `DELETE` removes the key (and empty parents it leaves behind).

Strings that a YAML 1.1 reader would turn into something else (`10:30`, `yes`, `0755`) are written
double-quoted, so every loader reads back the string the API meant.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    ScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken


class _Delete(Enum):
    DELETE = "delete"


DELETE: Final = _Delete.DELETE
"""Edit value: remove the key."""

Path = tuple[str, ...]
Edits = Mapping[Path, object]

# The order keys are written in, and the neighbour a new key is inserted after.
KEY_ORDER: Final[Mapping[Path, tuple[str, ...]]] = {
    (): (
        "id",
        "user_id",
        "label",
        "description",
        "remote_server_id",
        "backup_destination_id",
        "source",
        "schedule",
        "storage",
        "notification_stream_ids",
        "paused",
        "encryption_password",
        "isolated_username",
        "isolated_password",
        "run_timeout_seconds",
    ),
    ("source",): ("type", "path", "database_name", "excluded_tables"),
    ("schedule",): ("frequency", "weekday", "time", "custom_cron", "timezone"),
    ("storage",): ("max_backups", "appended_filename", "path"),
}

_SLUG_JUNK = re.compile(r"[^a-z0-9]+")
_NUMBER_LIKE = re.compile(r"^[-+.]?[0-9][0-9:._+-]*$")


class TaskFileError(ValueError):
    """The text is not a single YAML mapping we can edit."""


def slugify(label: str, *, max_length: int = 40) -> str:
    """A file-name-safe slug of a label: lowercase ASCII letters, digits and single dashes."""
    slug = _SLUG_JUNK.sub("-", label.lower()).strip("-")[:max_length].strip("-")
    return slug or "task"


def task_file_path(task_id: int, label: str, *, folder: str = "tasks") -> str:
    """Where a new task file goes, relative to the config set: `tasks/<id>-<slug>.yaml`."""
    return f"{folder}/{task_id}-{slugify(label)}.yaml"


def load_task_data(text: str) -> Any:
    """The plain Python data (dicts, lists, str, int, bool, None) that `text` holds."""
    return _plain(_load(_yaml(), text))


@dataclass(frozen=True, slots=True)
class EditedTask:
    text: str
    changed: tuple[str, ...]
    """Top-level keys whose values differ from the original's, in the edited file's order."""


def edit_task_text(text: str, edits: Edits) -> str:
    """`text` with `edits` applied; text outside the edited keys is unchanged."""
    return edit_task(text, edits).text


def edit_task(text: str, edits: Edits) -> EditedTask:
    """`text` with `edits` applied, and which top-level keys that changed: one YAML load and one
    dump, however many edits."""
    yaml = _yaml()
    mapping_indent, offset = _guess_indent(text)
    yaml.indent(mapping=mapping_indent, sequence=offset + 2, offset=offset)
    yaml.explicit_start = _has_explicit_start(text)
    root = _load(yaml, text)
    if not isinstance(root, CommentedMap):
        raise TaskFileError("a task file must be a YAML mapping at the top level")
    before = _plain(root)
    for path, value in edits.items():
        if not path:
            raise TaskFileError("an edit needs a non-empty key path")
        _apply(root, path, value)
    after = _plain(root)
    keys = dict.fromkeys([*after, *before])
    changed = tuple(key for key in keys if before.get(key) != after.get(key))
    return EditedTask(_dump(yaml, root), changed)


def new_task_text(data: Mapping[str, object]) -> str:
    """A new task file holding `data`, keys in the conventional order, `None` values left out."""
    root = CommentedMap()
    for key, value in _ordered(data, ()):
        if value is not None:
            _apply(root, (key,), value)
    yaml = _yaml()
    yaml.indent(mapping=2, sequence=2, offset=0)
    return _dump(yaml, root)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line someone wrote
    return yaml


def _load(yaml: YAML, text: str) -> Any:
    try:
        documents = list(yaml.load_all(text))
    except YAMLError as exc:
        raise TaskFileError(f"not valid YAML: {exc}") from exc
    if len(documents) != 1:
        raise TaskFileError(f"a task file holds exactly one YAML document, found {len(documents)}")
    return documents[0]


def _dump(yaml: YAML, root: CommentedMap) -> str:
    out = io.StringIO()
    yaml.dump(root, out)
    return out.getvalue()


def _has_explicit_start(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%")):
            return stripped == "---" or stripped.startswith("--- ")
    return False


def _guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, dash offset of block sequences), as the file already uses them."""
    mapping_indent: int | None = None
    offset: int | None = None
    opener: int | None = None  # column of the previous line if it opened a block (`key:`)
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        column = len(line) - len(stripped)
        if opener is not None:
            if stripped.startswith("- ") or stripped.rstrip() == "-":
                offset = column - opener if offset is None and column >= opener else offset
            elif mapping_indent is None and column > opener:
                mapping_indent = column - opener
        is_opener = stripped.split("#", 1)[0].rstrip().endswith(":")
        opener = column if is_opener and not stripped.startswith("- ") else None
    return (mapping_indent or 2, offset or 0)


def _apply(root: CommentedMap, path: Path, value: object) -> None:
    parents: list[CommentedMap] = [root]
    node = root
    for depth, key in enumerate(path[:-1]):
        child = node.get(key)
        if not isinstance(child, CommentedMap):
            if value is DELETE:
                return
            child = CommentedMap()
            if key in node:
                node[key] = child
            else:
                _insert(node, path[:depth], key, child)
        node = child
        parents.append(node)
    leaf = path[-1]
    if value is DELETE:
        if leaf in node:
            _remove(node, leaf)
        _prune_empty(parents, path)
    else:
        _put(node, path[:-1], leaf, value)


def _prune_empty(parents: Sequence[CommentedMap], path: Path) -> None:
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            return
        _remove(parents[depth - 1], path[depth - 1])


def _put(node: CommentedMap, where: Path, key: str, value: object) -> None:
    old = node.get(key)
    if isinstance(value, Mapping):
        if isinstance(old, CommentedMap):
            _replace_mapping(old, (*where, key), value)
            return
        new: object = CommentedMap()
        _replace_mapping(new, (*where, key), value)  # type: ignore[arg-type]
    elif isinstance(value, list | tuple):
        if isinstance(old, CommentedSeq):
            _replace_sequence(node, key, old, value)
            return
        new = _sequence(value, flow=True)
    else:
        new = _scalar(value, old)
    if key in node:
        node[key] = new
    else:
        _insert(node, where, key, new)


def _replace_mapping(node: CommentedMap, where: Path, value: Mapping[str, object]) -> None:
    for key in [key for key in node if key not in value]:
        _remove(node, key)
    for key, item in _ordered(value, where):
        if item is not None:
            _put(node, where, key, item)


def _ordered(data: Mapping[str, object], where: Path) -> Iterable[tuple[str, object]]:
    order = KEY_ORDER.get(where, ())
    rank = {key: index for index, key in enumerate(order)}
    return sorted(data.items(), key=lambda item: rank.get(item[0], len(order)))


def _replace_sequence(
    node: CommentedMap, key: str, old: CommentedSeq, items: Sequence[object]
) -> None:
    """Swap in `items`; an item kept from the old list keeps its end-of-line comment."""
    if list(old) == list(items):
        return
    trailing = _take_trailing(node, key)
    new = _sequence(items, flow=bool(old.fa.flow_style()))
    for index, item in enumerate(items):
        if item in old:
            comment = old.ca.items.get(list(old).index(item))
            if comment is not None:
                new.ca.items[index] = comment
    node[key] = new
    if trailing is not None:
        _give_trailing(node, key, trailing)


def _sequence(items: Sequence[object], *, flow: bool) -> CommentedSeq:
    seq = CommentedSeq(_scalar(item, None) for item in items)
    if flow:
        seq.fa.set_flow_style()
    else:
        seq.fa.set_block_style()
    return seq


def _scalar(value: object, old: object) -> object:
    if not isinstance(value, str):
        return value
    if isinstance(old, SingleQuotedScalarString) and "\n" not in value:
        return SingleQuotedScalarString(value)
    if isinstance(old, DoubleQuotedScalarString) or _misread_as_plain(value):
        return DoubleQuotedScalarString(value)
    return value


def _misread_as_plain(value: str) -> bool:
    """Would some YAML loader read this string, written plain, as something else?

    PyYAML answers for YAML 1.1; number-like text (`02:00`, `1_000`) is quoted whatever a given
    loader does with it, because a reader of the file cannot tell.
    """
    if _NUMBER_LIKE.match(value):
        return True
    try:
        return bool(pyyaml.safe_load(value) != value)
    except pyyaml.YAMLError:
        return True


def _insert(node: CommentedMap, where: Path, key: str, value: object) -> None:
    """Insert after the nearest key that comes before `key` in the conventional order."""
    order = KEY_ORDER.get(where, ())
    before = order[: order.index(key)] if key in order else tuple(node)
    keys = list(node)
    anchor = next((k for k in reversed(keys) if k in before), None)
    if anchor is None and keys and key in order:
        # Nothing conventional precedes it: go first, unless the file uses its own keys.
        node.insert(0, key, value)
        return
    anchor = anchor if anchor is not None else (keys[-1] if keys else None)
    if anchor is None:
        node[key] = value
        return
    node.insert(keys.index(anchor) + 1, key, value)
    # The lines after the anchor (blank lines, the next key's comment) belong below the new key.
    trailing = _take_trailing(node, anchor)
    if trailing is not None:
        _give_trailing(node, key, trailing)


def _remove(node: CommentedMap, key: str) -> None:
    """Remove `key` but keep the blank lines and comments that followed it for the next key."""
    keys = list(node)
    trailing = _take_trailing(node, key)
    del node[key]
    node.ca.items.pop(key, None)
    if trailing is None:
        return
    index = keys.index(key)
    if index > 0:
        _give_trailing(node, keys[index - 1], trailing)


def _last_entry(node: CommentedMap, key: str) -> tuple[Any, Any]:
    """The container and key holding the comment written after `key`'s value."""
    value = node[key]
    if isinstance(value, CommentedMap) and len(value) > 0:
        return _last_entry(value, list(value)[-1])
    if isinstance(value, CommentedSeq) and len(value) > 0 and not value.fa.flow_style():
        return value, len(value) - 1
    return node, key


def _comment_slot(container: Any) -> int:
    return 0 if isinstance(container, CommentedSeq) else 2


def _take_trailing(node: CommentedMap, key: str) -> str | None:
    container, where = _last_entry(node, key)
    entry = container.ca.items.get(where)
    slot = _comment_slot(container)
    token = entry[slot] if entry else None
    if not isinstance(token, CommentToken) or "\n" not in token.value:
        return None
    own, _, rest = token.value.partition("\n")
    if not rest:
        return None
    if own.strip():
        token.value = own + "\n"
    else:
        entry[slot] = None
    return "\n" + rest


def _give_trailing(node: CommentedMap, key: str, trailing: str) -> None:
    container, where = _last_entry(node, key)
    slot = _comment_slot(container)
    entry = container.ca.items.setdefault(where, [None, None, None, None])
    token = entry[slot]
    if isinstance(token, CommentToken):
        own = token.value[:-1] if token.value.endswith("\n") else token.value
        token.value = own + trailing
    else:
        entry[slot] = CommentToken(trailing, CommentMark(0), None)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, ScalarString | str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value
