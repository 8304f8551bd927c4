"""Bearer tokens: who is calling, and may they do this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reconciler.api.context import context
from reconciler.api.errors import ApiError
from reconciler.history import TokenRecord
from reconciler.models import User


class Ability(StrEnum):
    VIEW = "view-backup-tasks"
    CREATE = "create-backup-tasks"
    UPDATE = "update-backup-tasks"
    DELETE = "delete-backup-tasks"
    RUN = "run-backup-tasks"
    ALL = "*"


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    token: TokenRecord


_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `reconciler token create`, as `Authorization: Bearer <token>`.",
)


def _unauthenticated() -> ApiError:
    return ApiError(401, "Unauthenticated.", {"WWW-Authenticate": "Bearer"})


def require(ability: Ability | None) -> Callable[..., Caller]:
    """A dependency: the authenticated caller, whose token grants `ability` (None: any token)."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        ctx = context(request)
        if credentials is None:
            raise _unauthenticated()
        token = ctx.history.authenticate(credentials.credentials, ctx.clock.now())
        if token is None:
            raise _unauthenticated()
        # A token outlives its user in users.yaml only as a dead token.
        user = ctx.engine.desired.users.get(token.user_id)
        if user is None:
            raise _unauthenticated()
        if ability is not None and not {Ability.ALL, ability} & set(token.abilities):
            raise ApiError(403, f"This token does not have the {ability.value!r} ability.")
        return Caller(user, token)

    return dependency
