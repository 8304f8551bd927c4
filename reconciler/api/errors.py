"""One error shape for every failure: `{"error", "message"}`, or the 422 validation shape.

Validation errors name fields as the client sent them (`time_to_run_at`,
`notification_stream_ids.0`), never pydantic's location tuples, and never echo a submitted value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reconciler.api import schemas

log = logging.getLogger("reconciler.api")

INVALID_MESSAGE = "The given data was invalid."


class ApiError(Exception):
    """A failure with its status and a sentence for the client."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class NotFound(ApiError):
    def __init__(self, message: str = "Backup task not found") -> None:
        super().__init__(404, message)


class Invalid(Exception):
    """422: the request's fields, by their request names, and what is wrong with each."""

    def __init__(self, errors: Mapping[str, Sequence[str]]) -> None:
        super().__init__(INVALID_MESSAGE)
        self.errors = {field: list(messages) for field, messages in errors.items()}


def error_body(status: int, message: str) -> dict[str, str]:
    return schemas.Error(error=HTTPStatus(status).phrase, message=message).model_dump()


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the error statuses a route can return."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = schemas.Invalid if status == 422 else schemas.Error
        declared[status] = {"model": model, "description": HTTPStatus(status).phrase}
    return declared


def describe(error: Mapping[str, Any]) -> str:
    """A client-facing sentence for one pydantic error, without the submitted value."""
    kind = error["type"]
    field = field_name(error["loc"])
    human = field.split(".")[0].replace("_", " ")
    if kind == "missing":
        return f"The {human} field is required."
    if kind == "extra_forbidden":
        return f"The {human} field is not allowed."
    message: str = error["msg"]
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def field_name(loc: Sequence[str | int]) -> str:
    """`("body", "notification_stream_ids", 0)` -> `notification_stream_ids.0`."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(str(part) for part in parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(Invalid)
    async def _invalid(_request: Request, exc: Invalid) -> JSONResponse:
        body = schemas.Invalid(message=INVALID_MESSAGE, errors=exc.errors)
        return JSONResponse(body.model_dump(), 422)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = list(exc.errors())
        if any(problem["type"] == "json_invalid" for problem in problems):
            return JSONResponse(error_body(400, "The request body is not valid JSON."), 400)
        errors: dict[str, list[str]] = {}
        for problem in problems:
            errors.setdefault(field_name(problem["loc"]), []).append(describe(problem))
        body = schemas.Invalid(message=INVALID_MESSAGE, errors=errors)
        return JSONResponse(body.model_dump(), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404:
            message = "The requested resource was not found."
        return JSONResponse(
            error_body(exc.status_code, message), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the API", exc_info=exc)
        return JSONResponse(error_body(500, "The server failed to handle the request."), 500)
