"""Config-set files for tests: small, valid YAML documents built from keyword overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

USERS = """\
- id: 1
  name: Ada
  email: ada@example.com
  timezone: Europe/London
- id: 2
  name: Grace
  email: grace@example.com
  timezone: America/New_York
"""


def dump(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False)


def server(server_id: int = 1, user_id: int = 1, **fields: Any) -> str:
    base = {
        "id": server_id,
        "user_id": user_id,
        "label": f"server {server_id}",
        "host": "127.0.0.1",
    }
    return dump({**base, **fields})


def destination(destination_id: int = 1, user_id: int = 1, **fields: Any) -> str:
    base = {
        "id": destination_id,
        "user_id": user_id,
        "label": f"destination {destination_id}",
        "type": "local",
        "path": f"/var/tmp/backups-{destination_id}",
    }
    return dump({**base, **fields})


def task(task_id: int, user_id: int = 1, **fields: Any) -> str:
    base: dict[str, Any] = {
        "id": task_id,
        "user_id": user_id,
        "label": f"task {task_id}",
        "remote_server_id": user_id,
        "backup_destination_id": user_id,
        "source": {"type": "files", "path": "/srv"},
        "schedule": {"frequency": "daily", "time": "02:30"},
    }
    return dump({**base, **fields})


def base_files() -> dict[str, str]:
    """Two users, each with one server and one destination; no tasks yet."""
    return {
        "users.yaml": USERS,
        "servers/one.yaml": server(1, 1),
        "servers/two.yaml": server(2, 2),
        "destinations/one.yaml": destination(1, 1),
        "destinations/two.yaml": destination(2, 2),
    }
