"""Model versions: list, read, download weights."""

import base64
import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from coordinator.api import examples
from coordinator.api.deps import ContextDep, PrincipalDep
from coordinator.api.fast_path import (
    FastPathRoute,
    fast_path,
    header_values,
    known_principal,
    query_params,
)
from coordinator.api.openapi import Responses, problem, problems, success
from coordinator.api.schemas import ModelVersion, ModelVersionList, model_version_out
from coordinator.domain import model_versions
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.specs import DB_INT_MAX
from participant_sdk.wire import (
    ENCODING_HEADER,
    ENCODINGS,
    MANIFEST_HEADER,
    SIGNATURE_HEADER,
    Encoding,
)

router = APIRouter(
    route_class=FastPathRoute, prefix="/federations/{federation_id}/models", tags=["models"]
)

VersionPath = Annotated[
    str,
    Path(
        pattern=r"^(latest|[0-9]{1,10})$",
        description=f"A version number (at most {DB_INT_MAX}) or `latest`.",
    ),
]


_SEEN = problems(403) | problem(404, "No such federation")
_VERSION_SEEN = (
    problems(403)
    | problem(
        404,
        "No such federation or model version",
        slug="model-version-not-found",
        detail="model version 9 does not exist",
    )
    | problem(
        422,
        f"The version is neither a number (at most {DB_INT_MAX}) nor `latest`",
        detail="version: String should match pattern '^(latest|[0-9]{1,10})$'",
    )
)


WEIGHTS: Responses = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The safetensors bytes in the encoding `X-Model-Encoding` names; "
        "`ETag` is their sha256 (so each encoding has its own), `X-Model-Version` the "
        "version number",
    },
    304: {"description": "Not modified: `If-None-Match` named the current ETag"},
}
_WEIGHTS_SEEN = (
    problems(403)
    | problem(
        404,
        "No such federation or model version",
        slug="model-version-not-found",
        detail="model version 9 does not exist",
    )
    | problem(
        422,
        "The version is neither a number nor `latest`, or it is not served in the "
        "`encoding` asked for (float32 and the federation's transport encoding are)",
        detail="version 3 is served in float32, int8, not 'float16': the federation's "
        "transport.encoding decides",
    )
)


def _version(value: str) -> int | str:
    if value == "latest":
        return value
    if int(value) > DB_INT_MAX:  # what the version column holds: a 422, never a 500
        raise ValidationFailed(
            f"version must be at most {DB_INT_MAX} or 'latest', got {value}", field="version"
        )
    return int(value)


@router.get(
    "",
    response_model=ModelVersionList,
    summary="List the model versions",
    responses=success(200, "Every version with its lineage", {"items": [examples.MODEL_VERSION]})
    | _SEEN,
)
def list_models(federation_id: str, ctx: ContextDep, principal: PrincipalDep) -> ModelVersionList:
    """Model versions with their lineage (parent, sha256, chain hash)."""
    rows = model_versions.list_model_versions(ctx, principal, federation_id)
    return ModelVersionList(items=[model_version_out(r) for r in rows])


@router.get(
    "/{version}",
    response_model=ModelVersion,
    summary="Read a model version",
    responses=success(200, "The version and its lineage", examples.MODEL_VERSION) | _VERSION_SEEN,
)
def get_model(
    federation_id: str, version: VersionPath, ctx: ContextDep, principal: PrincipalDep
) -> ModelVersion:
    """One model version; `latest` names the newest."""
    return model_version_out(
        model_versions.get_model_version(ctx, principal, federation_id, _version(version))
    )


async def weights_answer(
    ctx: Context,
    principal: Principal,
    federation_id: str,
    version: str,
    encoding: Encoding | None,
    if_none_match: str | None,
) -> Response:
    """The answer of ``GET …/models/{version}/weights`` (also the body of a
    ``GET …/rounds/current/weights`` that has work for its caller)."""
    # the version's record and bytes never change: cached per process after the first read,
    # then served from the event loop without a worker thread
    number = _version(version)
    row = model_versions.cached_served_version(ctx, principal, federation_id, number)
    if row is None:
        row = await run_in_threadpool(
            model_versions.served_version, ctx, principal, federation_id, number
        )
    served = encoding or row.default_encoding
    sha256, _size = row.blob(served)
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "X-Model-Version": str(row.version),
        ENCODING_HEADER: served,
        "Cache-Control": "no-cache",
    }
    if row.manifest is not None and row.signature is not None:
        # the signed manifest travels with the bytes: the SDK verifies before it uses them
        headers[MANIFEST_HEADER] = base64.b64encode(row.manifest.encode()).decode("ascii")
        headers[SIGNATURE_HEADER] = row.signature
    if if_none_match is not None:
        candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        if etag in candidates or "*" in candidates:
            return Response(status_code=304, headers=headers)
    data = model_versions.cached_bytes(ctx, sha256)
    if data is None:
        data = await run_in_threadpool(model_versions.served_bytes, ctx, sha256)
    return Response(content=data, media_type="application/octet-stream", headers=headers)


_VERSION_TEXT = re.compile(r"latest|[0-9]{1,10}")
ENCODINGS_BY_NAME: dict[str, Encoding] = {name: name for name in ENCODINGS}
_WEIGHTS_QUERY = frozenset({"encoding"})
_WEIGHTS_HEADERS = frozenset({b"if-none-match"})


async def _fast_weights(request: Request) -> Response | None:
    principal = known_principal(request)
    params = query_params(request, _WEIGHTS_QUERY)
    found = header_values(request, _WEIGHTS_HEADERS)
    version = request.path_params["version"]
    if principal is None or params is None or found is None or not _VERSION_TEXT.fullmatch(version):
        return None
    encoding: Encoding | None = None
    if "encoding" in params:
        encoding = ENCODINGS_BY_NAME.get(params["encoding"])
        if encoding is None:
            return None
    ctx: Context = request.app.state.context
    federation_id = request.path_params["federation_id"]
    return await weights_answer(
        ctx, principal, federation_id, version, encoding, found.get(b"if-none-match")
    )


@router.get(
    "/{version}/weights",
    response_class=Response,
    summary="Download a version's weights",
    responses=WEIGHTS | _WEIGHTS_SEEN,
)
@fast_path(_fast_weights)
async def download_weights(
    federation_id: str,
    version: VersionPath,
    ctx: ContextDep,
    principal: PrincipalDep,
    encoding: Annotated[
        Encoding | None,
        Query(
            description="`float32` (the canonical weights) or the federation's "
            "`transport.encoding`; default: the federation's encoding.",
            examples=["float16"],
        ),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The version's safetensors bytes in the asked (or the federation's) encoding, byte
    for byte; `ETag` is their sha256, `X-Model-Encoding` the encoding, and
    `X-Model-Manifest`/`X-Model-Signature` carry the signed manifest (base64), which names
    the bytes of every encoding served."""
    return await weights_answer(ctx, principal, federation_id, version, encoding, if_none_match)
