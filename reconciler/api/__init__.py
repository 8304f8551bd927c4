"""The HTTP API: backup tasks read from the applied state, written back to git as commits."""

from reconciler.api.app import create_app
from reconciler.api.guard import DEFAULT_MAX_BODY_BYTES

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]
