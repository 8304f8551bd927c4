"""What the state store raises, whatever backend holds it."""

from __future__ import annotations

from reconciler.types import ReconcilerError


class StateError(ReconcilerError):
    """The state store cannot be used as asked (unknown run, newer schema...)."""
