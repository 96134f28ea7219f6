"""Federations: create, list, read, catalog."""

from typing import Annotated

from fastapi import APIRouter, Body, status

from coordinator.api import examples
from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep
from coordinator.api.json_off_loop import JsonOffLoopRoute
from coordinator.api.openapi import body_examples, keyed_write, problem, problems, success
from coordinator.api.schemas import (
    Catalog,
    Federation,
    FederationCreate,
    FederationList,
    federation_out,
)
from coordinator.domain import federations

router = APIRouter(route_class=JsonOffLoopRoute, prefix="/federations", tags=["federations"])

_CREATE_EXAMPLES = body_examples(
    mf=("Matrix factorisation, stop at a target", examples.FEDERATION_CREATE),
    ease=(
        "EASE over a small catalog, three candidate lambdas",
        {
            "name": "books",
            "model": {"kind": "ease", "num_items": 3, "ease_lambdas": [10, 100, 1000]},
            "rounds": {"max_rounds": 3},
            "catalog": ["isbn-1", "isbn-2", "isbn-3"],
        },
    ),
)
_SEEN = problems(403) | problem(404, "No such federation")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Federation,
    summary="Create a federation",
    responses=success(201, "The new federation; round 1 is open", examples.FEDERATION)
    | problems(413)
    | problem(403, "Only the admin creates federations")
    | keyed_write(),
)
def create_federation(
    body: Annotated[FederationCreate, Body(openapi_examples=_CREATE_EXAMPLES)],
    ctx: ContextDep,
    _admin: AdminDep,
) -> Federation:
    """Create a federation: model version 0 is initialised and round 1 opens."""
    view = federations.create_federation(
        ctx,
        name=body.name,
        model=body.model,
        strategy=body.strategy,
        rounds=body.rounds,
        catalog=body.catalog,
        target=body.target,
        deploy=body.deploy,
        privacy=body.privacy,
        limits=body.limits,
        transport=body.transport,
    )
    return federation_out(view, ctx.notifier)


@router.get(
    "",
    response_model=FederationList,
    summary="List federations",
    responses=success(200, "The federations the caller may see", {"items": [examples.FEDERATION]}),
)
def list_federations(ctx: ContextDep, principal: PrincipalDep) -> FederationList:
    """List federations (a participant sees only its own)."""
    return FederationList(
        items=[
            federation_out(v, ctx.notifier) for v in federations.list_federations(ctx, principal)
        ]
    )


@router.get(
    "/{federation_id}",
    response_model=Federation,
    summary="Read a federation",
    responses=success(200, "The federation", examples.FEDERATION) | _SEEN,
)
def get_federation(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Federation:
    """Read one federation, with its state and current round."""
    return federation_out(federations.get_federation(ctx, principal, federation_id), ctx.notifier)


@router.get(
    "/{federation_id}/catalog",
    response_model=Catalog,
    summary="Read the item catalog",
    responses=success(200, "External item id of each model row", examples.CATALOG) | _SEEN,
)
def get_catalog(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Catalog:
    """The federation's item catalog: external item id of each model row (may be empty)."""
    return Catalog(items=federations.get_catalog(ctx, principal, federation_id))
