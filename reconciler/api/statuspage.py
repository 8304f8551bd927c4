"""`GET /`: the status page, server-rendered, for the caller's tasks only.

The page is outside `/api`, so the request guard does not check it: it authenticates itself
with the same token check (`ApiContext.identify`), from an `Authorization: Bearer` header or the
HttpOnly, SameSite=Strict cookie that the login form sets (never from a query string). Logging
in and out are POSTs that must come from the page's own origin (`Origin` checked), so no other
site can log a browser in or out.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from reconciler import health
from reconciler.api import statusview
from reconciler.api.auth import Ability, Caller
from reconciler.api.context import ApiContext
from reconciler.desired import errors_for_user
from reconciler.models import ResolvedTask
from reconciler.state.runs import RunSummary

COOKIE = "reconciler_token"
PAGE, LOGIN, LOGOUT = "/", "/login", "/logout"
REFRESH_SECONDS = 30
# Tokens are `rk_` and URL-safe base64; anything not visible ASCII or far longer is no token.
_TOKEN = re.compile(r"[!-~]{1,512}")
_FORM = "application/x-www-form-urlencoded"

NOT_ACCEPTED = "That token was not accepted: it is unknown, revoked, or its user is gone."
CANNOT_VIEW = "That token cannot view backup tasks (it needs the 'view-backup-tasks' ability)."
CROSS_SITE = "Refused: this form may only be sent from the status page itself."


def install_status_page(app: FastAPI) -> None:
    """The page and its login and logout routes; they stay out of the OpenAPI schema."""
    templates = Environment(
        loader=PackageLoader("reconciler.api", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def render(name: str, status: int, **values: object) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        body = templates.get_template(name).render(
            nonce=nonce, refresh=REFRESH_SECONDS, login=LOGIN, logout=LOGOUT, **values
        )
        return HTMLResponse(body, status, headers=_page_headers(nonce, status))

    @app.get(
        PAGE, operation_id="showStatusPage", include_in_schema=False, response_class=HTMLResponse
    )
    async def status_page(request: Request) -> Response:
        ctx: ApiContext = request.app.state.reconciler
        caller = await _caller(ctx, request)
        if caller is None:
            response = render("login.html", 401, error=None)
            if COOKIE in request.cookies:  # revoked or malformed: drop it
                _forget(response, request)
            return response
        if not _can_view(caller):
            return render("login.html", 403, error=CANNOT_VIEW, signed_in=True)
        view = await _view(ctx, caller)
        return render("status.html", 200, view=view)

    @app.post(LOGIN, operation_id="logIn", include_in_schema=False, response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return render("login.html", 403, error=CROSS_SITE)
        token = await _form_token(request)
        ctx: ApiContext = request.app.state.reconciler
        caller = None if token is None else await ctx.identify(f"Bearer {token}")
        if caller is None or token is None:
            return render("login.html", 401, error=NOT_ACCEPTED)
        if not _can_view(caller):
            return render("login.html", 401, error=CANNOT_VIEW)
        response = RedirectResponse(PAGE, 303)
        response.set_cookie(
            COOKIE,
            token,
            path=PAGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post(LOGOUT, operation_id="logOut", include_in_schema=False, response_class=HTMLResponse)
    async def logout(request: Request) -> Response:
        if not _same_origin(request):
            return render("login.html", 403, error=CROSS_SITE)
        response = RedirectResponse(PAGE, 303)
        _forget(response, request)
        return response


async def _caller(ctx: ApiContext, request: Request) -> Caller | None:
    """The caller a Bearer header names, else the login cookie; None when neither is valid."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        cookie = request.cookies.get(COOKIE)
        if cookie is None or not _TOKEN.fullmatch(cookie):
            return None
        authorization = f"Bearer {cookie}"
    return await ctx.identify(authorization)


def _can_view(caller: Caller) -> bool:
    return bool({Ability.ALL, Ability.VIEW} & set(caller.token.abilities))


async def _form_token(request: Request) -> str | None:
    """The login form's `token` field; None for anything else. The body is bounded by the
    request guard's limit before it gets here."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != _FORM:
        return None
    try:
        fields = parse_qsl((await request.body()).decode(), max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        return None
    tokens = [value.strip() for name, value in fields if name == "token"]
    if len(tokens) != 1 or not _TOKEN.fullmatch(tokens[0]):
        return None
    return tokens[0]


def _same_origin(request: Request) -> bool:
    """A browser names the page a POST comes from in `Origin` (and `Sec-Fetch-Site`); a form
    another site sends is refused. A client that sends neither (curl) is no browser to trick."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def _forget(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=PAGE, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def _page_headers(nonce: str, status: int) -> dict[str, str]:
    headers = {
        # Nothing but the page's own inline style and same-origin forms; no script at all.
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self';"
            " frame-ancestors 'none'; base-uri 'none'"
        ),
        "Cache-Control": "no-store",
        # "no-referrer" would make a browser send `Origin: null` with the login form.
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


async def _view(ctx: ApiContext, caller: Caller) -> statusview.StatusView:
    engine = ctx.engine
    desired = engine.desired
    now = ctx.clock.now()
    owned = ctx.reads.owned(desired, caller.user)
    schedule, runs = ctx.state.schedule, ctx.state.runs

    def observed() -> tuple[dict[int, health.Timing], dict[int, list[RunSummary]]]:
        first_seen = schedule.first_seen()
        timings = {task.id: _timing(task, first_seen) for task in owned}
        since = statusview.runs_needed_since(list(timings.values()), now)
        return timings, runs.recent_runs(timings, since)

    # Blocking reads of the state store, off the event loop.
    timings, recent = await ctx.reader.run(observed)
    errors = desired.errors if caller.token.operator else errors_for_user(desired, caller.user.id)
    return statusview.StatusView(
        user=caller.user.name,
        zone=caller.user.timezone,
        tasks=_rows(owned, timings, recent, ctx, caller.user.timezone, now),
        errors=[statusview.error_row(error) for error in errors],
        revision=engine.revision,
        reconciled_at=statusview.revision_time(engine.reconciled_at),
        remote=None if ctx.upstream is None else statusview.remote_lines(ctx.upstream.status),
    )


def _timing(task: ResolvedTask, first_seen: Mapping[int, datetime]) -> health.Timing:
    return health.Timing(task.task.schedule, task.task.paused, first_seen.get(task.id))


def _rows(
    owned: Sequence[ResolvedTask],
    timings: Mapping[int, health.Timing],
    runs: Mapping[int, Sequence[RunSummary]],
    ctx: ApiContext,
    zone: str,
    now: datetime,
) -> list[statusview.TaskRow]:
    return [
        statusview.task_row(
            task, timings[task.id], runs.get(task.id, ()), ctx.engine.next_fire(task.id), zone, now
        )
        for task in owned
    ]
