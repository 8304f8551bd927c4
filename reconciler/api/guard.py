"""What every request must pass before any route reads its body: a token, and a bounded body.

An ASGI middleware, because FastAPI reads (and keeps) a whole body before its dependencies run:
checking the token in a dependency let a 200 MB unauthenticated POST be read into memory first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.api.auth import CALLER_SCOPE_KEY, UNAUTHENTICATED, Caller
from reconciler.api.errors import error_body
from reconciler.types import DEFAULT_MAX_BODY_BYTES as DEFAULT_MAX_BODY_BYTES

GUARDED_PREFIX = "/api"


class RequestGuard:
    """Refuses `/api` requests without a valid token (401) and bodies over `max_body_bytes`
    (413), before the body is read; a chunked body is read here up to the limit, then handed on.

    `identify` turns an Authorization header into the caller (None: refused), off the event
    loop (it reads the state store).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        identify: Callable[[str | None], Awaitable[Caller | None]],
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        open_paths: frozenset[str] = frozenset(),
    ) -> None:
        """`open_paths`: `/api` paths that authenticate on their own (the git webhook's
        signature); their bodies are still bounded."""
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        self._app = app
        self._identify = identify
        self._limit = max_body_bytes
        self._open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        guarded = path == GUARDED_PREFIX or path.startswith(f"{GUARDED_PREFIX}/")
        if guarded and path not in self._open_paths:
            caller = await self._identify(headers.get("authorization"))
            if caller is None:
                refusal = _refusal(401, UNAUTHENTICATED, {"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
            scope[CALLER_SCOPE_KEY] = caller
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._limit:
            await self._too_large()(scope, receive, send)
            return
        if length is None and "chunked" in headers.get("transfer-encoding", "").lower():
            try:
                body = await self._read_bounded(receive)
            except _ClientLeft:
                return
            if body is None:
                await self._too_large()(scope, receive, send)
                return
            receive = _replay(body, receive)
        # With a Content-Length within the limit the server itself never delivers more.
        await self._app(scope, receive, send)

    async def _read_bounded(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientLeft
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> JSONResponse:
        return _refusal(413, f"The request body is larger than the limit of {self._limit} bytes.")


class _ClientLeft(Exception):
    """The client disconnected before its body was complete: there is nothing to answer."""


def _refusal(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    # Close the connection: the body we did not read must not be taken for the next request.
    return JSONResponse(
        error_body(status, message), status, headers={**(headers or {}), "Connection": "close"}
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that delivers the already-read body once, then whatever the client sends."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
