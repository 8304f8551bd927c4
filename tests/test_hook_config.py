"""A task's `hooks` as the config states them: kept verbatim, bounded, errors located."""

from __future__ import annotations

import base64
import shlex
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.commands import make_hook_command
from reconciler.documents import parse_file
from reconciler.models import MAX_HOOK_CHARS, MAX_HOOKS, BackupTask
from tests import configset


def parsed(hooks: Any) -> tuple[list[BackupTask], list[str]]:
    result = parse_file("tasks/3.yaml", configset.task(3, hooks=hooks).encode())
    tasks = [item for item in result.objects if isinstance(item, BackupTask)]
    return tasks, [str(error) for error in result.errors]


def test_hook_text_is_kept_exactly_as_written() -> None:
    text = "  echo 'a'  \n\tdone \n"
    (task,), errors = parsed({"before": [text]})
    assert errors == []
    assert task.hooks.before == (text,)


def test_hooks_default_to_none_and_five_minutes() -> None:
    (task,), _ = parsed({})
    assert task.hooks.before == task.hooks.after == ()
    assert task.hooks.timeout == 300


@pytest.mark.parametrize(
    ("hooks", "said"),
    [
        ({"before": ["  "]}, "empty or only whitespace"),
        ({"after": ["a\x00b"]}, "NUL"),
        ({"before": ["x" * (MAX_HOOK_CHARS + 1)]}, "at most"),
        ({"before": ["true"] * (MAX_HOOKS + 1)}, "at most"),
        ({"timeout": 0}, "greater than 0"),
        ({"during": ["true"]}, "during"),
        ({"before": "true"}, "tuple"),
    ],
)
def test_a_bad_hook_is_an_error_naming_file_field_and_why(hooks: Any, said: str) -> None:
    tasks, errors = parsed(hooks)
    assert tasks == []
    assert any("tasks/3.yaml" in error and "hooks" in error for error in errors), errors
    assert any(said in error for error in errors), errors


@given(st.text(min_size=1), st.sampled_from(["success", "failure"]))
def test_the_hook_text_is_one_quoted_argument_never_spliced(text: str, result: str) -> None:
    hook = text.replace("\x00", "") or "x"
    line = make_hook_command(hook, {"RECONCILER_RESULT": result})
    assert line.count("'") == 2  # only the login-shell wrapper's quotes
    script = base64.b64decode(line.split()[3]).decode()
    assert script == (
        f"RECONCILER_RESULT={result}; export RECONCILER_RESULT; "
        f"exec sh -c {shlex.quote(hook)} reconciler-hook 2>&1"
    )
