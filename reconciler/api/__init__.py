"""The HTTP API: backup tasks read from the applied state, written back to git as commits."""

from reconciler.api.app import create_app

__all__ = ["create_app"]
