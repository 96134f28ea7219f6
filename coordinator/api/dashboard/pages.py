"""The dashboard's pages: sign-in, federations, one federation, its chain check, promote.

Who may see what follows the REST API: the admin sees everything and may promote or roll
back; a participant token sees its own federation read-only (no participant list, no
actions). A page is authenticated by ``Authorization: Bearer`` (scripts, tests) or by the
session cookie set by the sign-in form. State-changing posts from a cookie session must
carry the session's CSRF token; a Bearer request carries no ambient credential and needs none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from coordinator.api.dashboard.charts import metric_charts
from coordinator.api.dashboard.sessions import (
    COOKIE_NAME,
    SESSION_SECONDS,
    DashboardSession,
    SessionSigner,
)
from coordinator.api.deps import ContextDep
from coordinator.domain import deployment, federations, overview
from coordinator.domain.auth import (
    Principal,
    authenticate,
    hash_token,
    principal_for_token_hash,
)
from coordinator.domain.context import Context
from coordinator.domain.errors import (
    Forbidden,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from coordinator.domain.specs import DB_INT_MAX

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
FORM_TYPE = "application/x-www-form-urlencoded"
# pages need nothing but this origin (no script at all); no other site may frame them, so
# the promote buttons cannot be clickjacked
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'none'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class CsrfFailed(Forbidden):
    slug = "csrf-failed"
    title = "CSRF check failed"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "–"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "–"
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


templates.env.filters["when"] = _when
templates.env.globals["duration"] = _duration


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    # None when the page was asked with a Bearer header: no cookie, so no CSRF token needed
    session: DashboardSession | None
    csrf: str | None


def _viewer(request: Request, ctx: Context) -> Viewer | None:
    """Who is looking: a Bearer token wins over the cookie; None if neither is valid."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized(
                "send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
            )
        return Viewer(authenticate(ctx, token.strip()), None, None)
    signer = SessionSigner(ctx.secret_key)
    session = signer.verify(request.cookies.get(COOKIE_NAME))
    if session is None:
        return None
    try:
        principal = principal_for_token_hash(ctx, session.token_hash)
    except Unauthorized:
        return None  # revoked, re-enrolled or a new admin token: sign in again
    return Viewer(principal, session, signer.csrf_token(session))


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _sign_in_required(request: Request) -> Response:
    if _wants_html(request):
        return RedirectResponse("/signin", status_code=303)
    raise Unauthorized(
        "sign in at /signin, or send 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form of a post (the size limit middleware bounds the body)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise UnsupportedMediaType(f"dashboard forms are posted as {FORM_TYPE}")
    text = (await request.body()).decode("utf-8", errors="replace")
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=20)
    except ValueError as exc:  # more fields than any dashboard form has
        raise ValidationFailed(f"the form does not parse: {exc}") from exc
    return {name: values[0] for name, values in fields.items()}


def _check_origin(request: Request) -> None:
    # defence in depth beside SameSite=Strict and the token: a browser's cross-site post
    # names its own origin ("null" from a sandboxed frame or data: page counts as foreign)
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise CsrfFailed(f"a post from {origin} is not accepted; use the dashboard's own pages")


def _check_csrf(request: Request, ctx: Context, viewer: Viewer, form: dict[str, str]) -> None:
    _check_origin(request)
    if viewer.session is None:
        return
    if not SessionSigner(ctx.secret_key).csrf_ok(viewer.session, form.get("csrf_token")):
        raise CsrfFailed(
            "the form's csrf_token is missing or does not belong to this session; "
            "reload the page and submit again"
        )


def _page(request: Request, name: str, viewer: Viewer | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"viewer": viewer, **context},
        headers=SECURITY_HEADERS,
    )


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request) -> HTMLResponse:
    """The sign-in form: the token is posted, never put in a URL."""
    return _page(request, "signin.html", None, error=None)


@router.post("/signin")
async def signin(request: Request, ctx: ContextDep) -> Response:
    """Check the posted token and set the session cookie."""
    _check_origin(request)
    token = (await _form(request)).get("token", "").strip()
    try:
        if not token:
            raise Unauthorized("enter the admin token or a participant token")
        principal = await run_in_threadpool(authenticate, ctx, token)
    except Unauthorized as exc:
        if not _wants_html(request):
            raise
        page = _page(request, "signin.html", None, error=exc.detail)
        page.status_code = 401
        return page
    cookie, _session = SessionSigner(ctx.secret_key).issue(hash_token(ctx.secret_key, token))
    target = "/" if principal.is_admin else f"/federations/{principal.federation_id}"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/signout")
async def signout(request: Request, ctx: ContextDep) -> Response:
    """End the browser's session (the form carries the CSRF token)."""
    form = await _form(request)
    viewer = await run_in_threadpool(_viewer, request, ctx)
    if viewer is None:
        return _sign_in_required(request)
    _check_csrf(request, ctx, viewer, form)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/", response_class=HTMLResponse)
def index(request: Request, ctx: ContextDep) -> Response:
    """Federations the caller may see."""
    viewer = _viewer(request, ctx)
    if viewer is None:
        return _sign_in_required(request)
    items = federations.list_federations(ctx, viewer.principal)
    return _page(request, "index.html", viewer, federations=items)


@router.get("/federations/{federation_id}", response_class=HTMLResponse)
def federation_page(federation_id: str, request: Request, ctx: ContextDep) -> Response:
    """One federation: rounds, participants, versions, deployment, curves, privacy."""
    viewer = _viewer(request, ctx)
    if viewer is None:
        return _sign_in_required(request)
    view = overview.federation_overview(ctx, viewer.principal, federation_id)
    deployed = view.federation.deployed_version
    charts = metric_charts(((m.version, m.split, m.metrics) for m in view.metrics), deployed)
    validation = {m.version: m for m in view.metrics if m.split == "validation"}
    return _page(
        request,
        "federation.html",
        viewer,
        o=view,
        f=view.federation.row,
        charts=charts,
        validation=validation,
        deployed=deployed,
    )


@router.get("/federations/{federation_id}/lineage", response_class=HTMLResponse)
def lineage_page(federation_id: str, request: Request, ctx: ContextDep) -> Response:
    """Recompute the federation's hash chain from the stored blobs."""
    viewer = _viewer(request, ctx)
    if viewer is None:
        return _sign_in_required(request)
    report = overview.check_lineage(ctx, viewer.principal, federation_id)
    view = federations.get_federation(ctx, viewer.principal, federation_id)
    return _page(request, "lineage.html", viewer, f=view.row, report=report)


@router.post("/federations/{federation_id}/deployment")
async def promote(federation_id: str, request: Request, ctx: ContextDep) -> Response:
    """Promote or roll back to the posted version (admin; CSRF-checked for a session)."""
    form = await _form(request)
    viewer = await run_in_threadpool(_viewer, request, ctx)
    if viewer is None:
        return _sign_in_required(request)
    _check_csrf(request, ctx, viewer, form)
    raw = form.get("version", "")
    # ASCII digits only ("²".isdigit() too) and what the version column holds: a 422, never a 500
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) <= DB_INT_MAX):
        raise ValidationFailed(
            f"version must be a model version number (at most {DB_INT_MAX}), got {raw[:20]!r}",
            field="version",
        )
    await run_in_threadpool(
        deployment.promote, ctx, viewer.principal, federation_id, version=int(raw)
    )
    return RedirectResponse(f"/federations/{federation_id}#deployment", status_code=303)
