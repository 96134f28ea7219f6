"""``client.models``: model versions and their weights (revalidated by ``ETag``)."""

from __future__ import annotations

import builtins
import hashlib
import re
from typing import Any, Literal

import httpx
import numpy as np
import numpy.typing as npt

from .._base_client import (
    CachedWeights,
    RequestOptions,
    TimeoutTypes,
    WeightsCache,
    path_segment,
)
from .._constants import NOT_GIVEN, NotGiven
from .._exceptions import APIResponseValidationError, ModelSignatureError
from ..types import ItemList, ModelVersion, SigningKey
from ..wire import (
    ENCODING_HEADER,
    ENCODINGS,
    MANIFEST_HEADER,
    SIGNATURE_HEADER,
    Encoding,
    WireError,
    decode_model,
    decode_weights,
    verify_manifest,
)
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncModels", "Models", "VersionRef", "weights_from_response", "weights_key"]

#: A model version number, or ``"latest"``.
VersionRef = int | Literal["latest"]

_SHA256_ETAG = re.compile(r'^"([0-9a-fA-F]{64})"$')


def _path(fid: str, suffix: str = "") -> str:
    return f"/v1/federations/{path_segment(fid)}/models{suffix}"


def weights_key(fid: str, version: VersionRef, encoding: Encoding | None) -> tuple[str, str]:
    """The weights cache's key of a version's bytes in ``encoding``."""
    # each encoding has its own bytes and ETag: cached apart
    return (str(fid), str(version) if encoding is None else f"{version}?encoding={encoding}")


def _weights_request(
    cache: WeightsCache,
    fid: str,
    version: VersionRef,
    encoding: Encoding | None,
    timeout: TimeoutTypes | NotGiven,
) -> tuple[tuple[str, str], CachedWeights | None, RequestOptions]:
    key = weights_key(fid, version, encoding)
    cached = cache.get(key)
    headers = {"Accept": "application/octet-stream"}
    if cached is not None:
        headers["If-None-Match"] = cached.etag
    path = _path(fid, f"/{path_segment(version)}/weights")
    params = None if encoding is None else {"encoding": encoding}
    options = RequestOptions("GET", path, params=params, headers=headers, timeout=timeout)
    return key, cached, options


def _served_encoding(response: httpx.Response, asked: Encoding | None) -> str:
    """The encoding the coordinator says it served (float32 when it does not say)."""
    served = str(response.headers.get(ENCODING_HEADER, "float32"))
    if served not in ENCODINGS or (asked is not None and served != asked):
        raise ModelSignatureError(
            f"weights refused: served in encoding {served!r}, asked for {asked or 'any'}",
            response=response,
        )
    return served


def _signed_sha256(fields: dict[str, Any], encoding: str) -> object:
    """The sha256 the signed manifest gives the weights in ``encoding``."""
    if encoding == "float32":
        return fields.get("sha256")
    entry = (fields.get("encodings") or {}).get(encoding)
    return entry.get("sha256") if isinstance(entry, dict) else None


def _verify_signed(
    fid: str,
    version: VersionRef,
    response: httpx.Response,
    data: bytes,
    public_key: str,
    encoding: str,
) -> None:
    """Refuse bytes the pinned key does not vouch for: a strong sha256 ``ETag`` that
    matches them, and a manifest signed by the key naming these bytes (in their
    encoding), this federation and this version."""

    def refuse(why: str) -> ModelSignatureError:
        return ModelSignatureError(
            f"weights of version {version} refused: {why}", response=response
        )

    etag = response.headers.get("etag")
    match = _SHA256_ETAG.match(etag or "")
    if match is None:
        raise refuse(f"the ETag {etag!r} is missing, weak or not a sha256")
    actual = hashlib.sha256(data).hexdigest()
    if actual != match.group(1).lower():
        raise refuse(f"the bytes do not match their ETag {etag}")
    manifest = response.headers.get(MANIFEST_HEADER)
    signature = response.headers.get(SIGNATURE_HEADER)
    if manifest is None or signature is None:
        raise refuse("they are not signed (no manifest or signature header)")
    try:
        fields = verify_manifest(manifest, signature, public_key)
    except WireError as err:
        raise refuse(err.message) from err
    served = response.headers.get("x-model-version")
    if _signed_sha256(fields, encoding) != actual:
        raise refuse(f"the signed manifest names other bytes (encoding {encoding})")
    if fields.get("federation_id") != str(fid):
        raise refuse("the signed manifest is of another federation")
    if (version != "latest" and fields.get("version") != version) or (
        served is not None and str(fields.get("version")) != served
    ):
        raise refuse(f"the signed manifest is of version {fields.get('version')}")


def weights_from_response(
    cache: WeightsCache,
    key: tuple[str, str],
    cached: CachedWeights | None,
    response: httpx.Response,
    public_key: str,
    *,
    fid: str,
    version: VersionRef,
    asked: Encoding | None,
) -> dict[str, npt.NDArray[np.generic]]:
    """Decode the weights of a 200 (verified, then cached) or the cached copy on a 304
    (verified when it was downloaded); compressed encodings come back as float32."""
    if response.status_code == 304:
        if cached is None:
            raise APIResponseValidationError(
                "304 Not Modified for weights the client never downloaded", response=response
            )
        data, encoding = cached.data, cached.encoding
    else:
        data = response.content
        encoding = _served_encoding(response, asked)
        _verify_signed(fid, version, response, data, public_key, encoding)
        cache.put(key, CachedWeights(etag=response.headers["etag"], data=data, encoding=encoding))
    try:
        # safetensors only: received bytes are never unpickled (a pickle can run code).
        if encoding == "float32":
            return decode_weights(data)
        return dict(decode_model(data, encoding))
    except WireError as err:
        raise APIResponseValidationError(
            f"weights of version {version} are not valid safetensors ({encoding}): {err}",
            response=response,
        ) from err


class Models(SyncAPIResource):
    """The global model versions of a federation."""

    def list(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[ModelVersion]:
        """Every model version, version 0 (the initial model) first."""
        return self._client._get(_path(fid), ItemList[ModelVersion], timeout=timeout).items

    def get(
        self, fid: str, version: VersionRef, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> ModelVersion:
        """One model version's metadata.

        Parameters
        ----------
        fid : str
            The federation id.
        version : int or "latest"
            The version number, or ``"latest"``.

        Raises
        ------
        NotFoundError
            If there is no such version (``model-version-not-found``).
        """
        path = _path(fid, f"/{path_segment(version)}")
        return self._client._get(path, ModelVersion, timeout=timeout)

    def weights(
        self,
        fid: str,
        version: VersionRef,
        *,
        encoding: Encoding | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Download a model version's tensors (for ``mf``: ``item_factors``, ``item_bias``).

        The client keeps the last bytes per ``(fid, version)`` and revalidates them with
        ``If-None-Match``: when the coordinator answers 304 the cached bytes are used and
        nothing is downloaded again. The bytes must match a strong ``ETag`` (their sha256)
        and a manifest signed by the pinned key (``Client(signing_key=...)``, or fetched
        and pinned on the first download) naming this federation and version; they are
        parsed as safetensors only; every call returns fresh arrays.

        Parameters
        ----------
        fid : str
            The federation id.
        version : int or "latest"
            The version number, or ``"latest"``.
        encoding : {"float32", "float16", "int8"}, optional
            The transport encoding to download (``float32`` or the federation's
            ``transport.encoding``); default: the federation's. Compressed bytes are
            verified as served (the signed manifest names them) and returned as float32.

        Returns
        -------
        dict of str to numpy.ndarray
            The model's tensors by name.

        Raises
        ------
        ModelSignatureError
            If the bytes are unsigned, signed by another key, or not what the signed
            manifest names.
        """
        public_key = self._client.signing_key or self._pin(timeout)
        cache = self._client._weights_cache
        key, cached, options = _weights_request(cache, fid, version, encoding, timeout)
        response = self._client._request(options)
        return weights_from_response(
            cache, key, cached, response, public_key, fid=fid, version=version, asked=encoding
        )

    def signing_key(self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> SigningKey:
        """The coordinator's current signing key (``GET /v1/signing-key``); this does not
        change the key the client has pinned."""
        return self._client._get("/v1/signing-key", SigningKey, timeout=timeout)

    def _pin(self, timeout: TimeoutTypes | NotGiven) -> str:
        self._client.signing_key = self.signing_key(timeout=timeout).public_key
        return self._client.signing_key


class AsyncModels(AsyncAPIResource):
    """The global model versions of a federation (async twin of :class:`Models`)."""

    async def list(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[ModelVersion]:
        """Every model version, version 0 first."""
        items = await self._client._get(_path(fid), ItemList[ModelVersion], timeout=timeout)
        return items.items

    async def get(
        self, fid: str, version: VersionRef, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> ModelVersion:
        """One model version's metadata (``version`` may be ``"latest"``)."""
        path = _path(fid, f"/{path_segment(version)}")
        return await self._client._get(path, ModelVersion, timeout=timeout)

    async def weights(
        self,
        fid: str,
        version: VersionRef,
        *,
        encoding: Encoding | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Download a model version's tensors, revalidating cached bytes by ``ETag``.

        See :meth:`Models.weights`.
        """
        public_key = self._client.signing_key or await self._pin(timeout)
        cache = self._client._weights_cache
        key, cached, options = _weights_request(cache, fid, version, encoding, timeout)
        response = await self._client._request(options)
        return weights_from_response(
            cache, key, cached, response, public_key, fid=fid, version=version, asked=encoding
        )

    async def signing_key(self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> SigningKey:
        """The coordinator's current signing key (see :meth:`Models.signing_key`)."""
        return await self._client._get("/v1/signing-key", SigningKey, timeout=timeout)

    async def _pin(self, timeout: TimeoutTypes | NotGiven) -> str:
        self._client.signing_key = (await self.signing_key(timeout=timeout)).public_key
        return self._client.signing_key
