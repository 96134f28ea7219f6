"""Admin tokens: create (with a lifetime), list, revoke."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response, status

from coordinator.api import examples
from coordinator.api.deps import AdminDep, ContextDep
from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.api.openapi import (
    body_examples,
    keyed_write,
    problem,
    problems,
    secret_not_replayable,
    success,
)
from coordinator.api.schemas import AdminToken, AdminTokenCreate, AdminTokenList, IssuedAdminToken
from coordinator.domain import admin_tokens

router = APIRouter(route_class=JsonOffLoopRoute, prefix="/admin/tokens", tags=["admin tokens"])

_ADMIN = problem(403, "Only the admin manages admin tokens")
_NO_TOKEN = problem(
    404,
    "No admin token has this id",
    slug="admin-token-not-found",
    detail=f"admin token {examples.ISSUED_ID} does not exist",
)
_LAST_TOKEN = problem(
    409,
    "It is the last active admin token (create another first), or the same "
    "Idempotency-Key is still running",
    slug="last-admin-token",
    title="The last active admin token",
    detail=f"admin token {examples.ISSUED_ID} is the last active one: create "
    "another (POST /v1/admin/tokens) before revoking it",
)
# overrides keyed_write's 409: a created token is never stored for an Idempotency-Key replay
_CREATE_CONFLICT = secret_not_replayable(
    "created a token",
    "list the admin tokens (GET /v1/admin/tokens), revoke the one it created and create another",
)


def _read(row: Any) -> AdminToken:
    return AdminToken.model_validate(
        {
            **{field: getattr(row, field) for field in AdminToken.model_fields if field != "state"},
            "state": admin_tokens.token_state(row),
        }
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IssuedAdminToken,
    summary="Create an admin token",
    responses=success(201, "The admin token, with its secret", examples.ISSUED_ADMIN_TOKEN)
    | _ADMIN
    | problems(413)
    | keyed_write()
    | _CREATE_CONFLICT,
)
def create_admin_token(
    body: Annotated[
        AdminTokenCreate,
        Body(
            openapi_examples=body_examples(ci=("A week-long CI token", examples.ADMIN_TOKEN_CREATE))
        ),
    ],
    response: Response,
    ctx: ContextDep,
    admin: AdminDep,
) -> IssuedAdminToken:
    """Create an admin token that expires after `expires_in_seconds` (default: the
    coordinator's FEDREC_ADMIN_TOKEN_TTL_SECONDS); the token is shown only this once."""
    row, token = admin_tokens.create_admin_token(
        ctx, admin, name=body.name, expires_in_seconds=body.expires_in_seconds
    )
    # no-store: no cache keeps the token, nor the Idempotency-Key record (api/idempotency)
    response.headers["Cache-Control"] = "no-store"
    return IssuedAdminToken.model_validate({**_read(row).model_dump(), "token": token})


@router.get(
    "",
    response_model=AdminTokenList,
    summary="List admin tokens",
    responses=success(
        200,
        "Every admin token, oldest first (never the secrets)",
        {"items": [examples.BOOTSTRAP_ADMIN_TOKEN, examples.ADMIN_TOKEN]},
    )
    | _ADMIN,
)
def list_admin_tokens(ctx: ContextDep, admin: AdminDep) -> AdminTokenList:
    """Every admin token, active, expired and revoked (never the tokens themselves)."""
    rows = admin_tokens.list_admin_tokens(ctx, admin)
    return AdminTokenList(items=[_read(row) for row in rows])


@router.delete(
    "/{token_id}",
    response_model=AdminToken,
    summary="Revoke an admin token",
    responses=success(200, "The admin token, now revoked", examples.REVOKED_ADMIN_TOKEN)
    | _ADMIN
    | _NO_TOKEN
    | keyed_write(validates=False)
    | _LAST_TOKEN,
)
def revoke_admin_token(token_id: str, ctx: ContextDep, admin: AdminDep) -> AdminToken:
    """Revoke an admin token: it stops working at once (in every coordinator process
    within 0.5 s). Revoking the token of this very call is allowed, unless it is the last."""
    return _read(admin_tokens.revoke_admin_token(ctx, admin, token_id))
