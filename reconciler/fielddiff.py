"""Which fields differ between two versions of a config document, by their dotted paths. Pure.

A task's history names the fields each commit changed as the YAML file names them
(`schedule.time`, `source.path`, `notification_stream_ids`). Mappings are compared key by key;
any other value (a list, a scalar) is one field, compared whole and by type as well as value, so
`1` and `true`, or `5` and `5.0`, differ as the models would read them differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def changed_fields(before: Mapping[Any, Any], after: Mapping[Any, Any]) -> tuple[str, ...]:
    """The sorted paths at which two documents differ. A field present on one side only is
    changed, and so is every field below it: against `{}`, every field of the other side."""
    found: set[str] = set()
    _compare(before, after, "", found)
    return tuple(sorted(found))


def _compare(before: Any, after: Any, path: str, found: set[str]) -> None:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in before.keys() | after.keys():
            here = _join(path, key)
            if key not in after:
                _leaves(before[key], here, found)
            elif key not in before:
                _leaves(after[key], here, found)
            else:
                _compare(before[key], after[key], here, found)
    elif not _same(before, after):
        found.add(path)


def _leaves(value: Any, path: str, found: set[str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _leaves(inner, _join(path, key), found)
    else:
        found.add(path)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _same(left: Any, right: Any) -> bool:
    """Equal and of the same types all the way down (Python's `1 == True == 1.0` is not)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, Mapping):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(_same, left, right))
    # A NaN is the same NaN in both versions, though it equals nothing.
    return bool(left == right) or (left != left and right != right)
