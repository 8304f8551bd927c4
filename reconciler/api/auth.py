"""Bearer tokens: who is calling, and may they do this."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from reconciler.api.errors import ApiError
from reconciler.api.tokenuse import TokenUses
from reconciler.models import User
from reconciler.state.tokens import TokenRecord


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


# Declares the scheme in the OpenAPI schema; the token itself is checked by `identify`, which
# the request guard calls before anything reads the request's body.
_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `reconciler token create`, as `Authorization: Bearer <token>`.",
)

# Where the request guard leaves the authenticated caller in the ASGI scope.
CALLER_SCOPE_KEY = "reconciler.caller"
UNAUTHENTICATED = "Unauthenticated."


async def identify(
    authorization: str | None,
    find: Callable[[str], Awaitable[TokenRecord | None]],
    uses: TokenUses,
    users: Mapping[int, User],
    now: datetime,
) -> Caller | None:
    """The caller an `Authorization: Bearer` header names; None when it is missing, malformed,
    unknown or revoked, or names a user no longer in `users`. `find` looks the token up in the
    state store as it is now (see `Tokens.find`), so a revoked token is refused from the next
    request on; its use is noted in `uses`.
    """
    scheme, credentials = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not credentials:
        return None
    token = await find(credentials)
    if token is None:
        return None
    # A token outlives its user in users.yaml only as a dead token.
    user = users.get(token.user_id)
    if user is None:
        return None
    uses.used(token.id, now)
    return Caller(user, token)


def require(ability: Ability | None) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the authenticated caller, whose token grants `ability` (None: any token)."""

    async def dependency(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = request.scope.get(CALLER_SCOPE_KEY)
        if not isinstance(caller, Caller):  # only a route outside the guarded prefix gets here
            raise ApiError(401, UNAUTHENTICATED, {"WWW-Authenticate": "Bearer"})
        if ability is not None and not {Ability.ALL, ability} & set(caller.token.abilities):
            raise ApiError(403, f"This token does not have the {ability.value!r} ability.")
        return caller

    return dependency
