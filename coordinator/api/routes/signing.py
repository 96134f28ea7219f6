"""The public half of the coordinator's lineage signing key."""

from fastapi import APIRouter

from coordinator.api import examples
from coordinator.api.deps import ContextDep, PrincipalDep
from coordinator.api.openapi import success
from coordinator.api.schemas import SigningKey
from coordinator.domain.signing import ALGORITHM

router = APIRouter(tags=["models"])


@router.get(
    "/signing-key",
    response_model=SigningKey,
    summary="Read the lineage signing key",
    responses=success(200, "The public key to pin", examples.SIGNING_KEY),
)
def get_signing_key(ctx: ContextDep, principal: PrincipalDep) -> SigningKey:  # noqa: ARG001
    """The Ed25519 public key that signs every model version's manifest (pin it)."""
    return SigningKey(
        algorithm=ALGORITHM, public_key=ctx.signer.public_key_b64, key_id=ctx.signer.key_id
    )
