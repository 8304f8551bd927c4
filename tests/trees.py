"""Comparing a restored tree with its original."""

from __future__ import annotations

import filecmp
from pathlib import Path


def same_tree(left: Path, right: Path) -> bool:
    """Same names, kinds and bytes all the way down (symlinks compared as links)."""
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(left / sub, right / sub) for sub in comparison.common_dirs)
