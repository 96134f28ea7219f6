"""Model versions: list, read, download weights."""

import base64
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from coordinator.api.deps import ContextDep, PrincipalDep
from coordinator.api.schemas import ModelVersion, ModelVersionList, model_version_out
from coordinator.domain import model_versions
from participant_sdk.wire import MANIFEST_HEADER, SIGNATURE_HEADER

router = APIRouter(prefix="/federations/{federation_id}/models", tags=["models"])

VersionPath = Annotated[
    str, Path(pattern=r"^(latest|[0-9]+)$", description="A version number or `latest`.")
]


def _version(value: str) -> int | str:
    return value if value == "latest" else int(value)


@router.get("", response_model=ModelVersionList)
def list_models(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> ModelVersionList:
    """Model versions with their lineage (parent, sha256, chain hash)."""
    rows = model_versions.list_model_versions(ctx, principal, federation_id)
    return ModelVersionList(items=[model_version_out(r) for r in rows])


@router.get("/{version}", response_model=ModelVersion)
def get_model(
    federation_id: str, version: VersionPath, ctx: ContextDep, principal: PrincipalDep
) -> ModelVersion:
    """One model version; `latest` names the newest."""
    return model_version_out(
        model_versions.get_model_version(ctx, principal, federation_id, _version(version))
    )


@router.get(
    "/{version}/weights",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "safetensors bytes"},
        304: {"description": "Not modified (ETag matched)"},
    },
)
def download_weights(
    federation_id: str,
    version: VersionPath,
    ctx: ContextDep,
    principal: PrincipalDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The version's safetensors bytes, byte for byte; `ETag` is their sha256, and
    `X-Model-Manifest`/`X-Model-Signature` carry the signed manifest (base64)."""
    row = model_versions.get_model_version(ctx, principal, federation_id, _version(version))
    etag = f'"{row.sha256}"'
    headers = {"ETag": etag, "X-Model-Version": str(row.version), "Cache-Control": "no-cache"}
    if row.manifest is not None and row.signature is not None:
        # the signed manifest travels with the bytes: the SDK verifies before it uses them
        headers[MANIFEST_HEADER] = base64.b64encode(row.manifest.encode()).decode("ascii")
        headers[SIGNATURE_HEADER] = row.signature
    if if_none_match is not None:
        candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        if etag in candidates or "*" in candidates:
            return Response(status_code=304, headers=headers)
    data = model_versions.read_version_bytes(ctx, row)
    return Response(content=data, media_type="application/octet-stream", headers=headers)
