"""Federations: create, list, read, catalog."""

from fastapi import APIRouter, status

from coordinator.api.deps import AdminDep, ContextDep, PrincipalDep
from coordinator.api.schemas import (
    Catalog,
    Federation,
    FederationCreate,
    FederationList,
    federation_out,
)
from coordinator.domain import federations

router = APIRouter(prefix="/federations", tags=["federations"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Federation)
def create_federation(body: FederationCreate, ctx: ContextDep, _admin: AdminDep) -> Federation:
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
    )
    return federation_out(view)


@router.get("", response_model=FederationList)
def list_federations(ctx: ContextDep, principal: PrincipalDep) -> FederationList:
    """List federations (a participant sees only its own)."""
    return FederationList(
        items=[federation_out(v) for v in federations.list_federations(ctx, principal)]
    )


@router.get("/{federation_id}", response_model=Federation)
def get_federation(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Federation:
    """Read one federation, with its state and current round."""
    return federation_out(federations.get_federation(ctx, principal, federation_id))


@router.get("/{federation_id}/catalog", response_model=Catalog)
def get_catalog(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> Catalog:
    """The federation's item catalog: external item id of each model row (may be empty)."""
    return Catalog(items=federations.get_catalog(ctx, principal, federation_id))
