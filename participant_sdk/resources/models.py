"""``client.models``: model versions and their weights (revalidated by ``ETag``)."""

from __future__ import annotations

import builtins
import hashlib
import re
from typing import Literal

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
from .._exceptions import APIResponseValidationError
from ..types import ItemList, ModelVersion
from ..wire import WireError, decode_weights
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncModels", "Models", "VersionRef"]

#: A model version number, or ``"latest"``.
VersionRef = int | Literal["latest"]

_SHA256_ETAG = re.compile(r'^"([0-9a-fA-F]{64})"$')


def _path(fid: str, suffix: str = "") -> str:
    return f"/v1/federations/{path_segment(fid)}/models{suffix}"


def _weights_request(
    cache: WeightsCache, fid: str, version: VersionRef, timeout: TimeoutTypes | NotGiven
) -> tuple[tuple[str, str], CachedWeights | None, RequestOptions]:
    key = (str(fid), str(version))
    cached = cache.get(key)
    headers = {"Accept": "application/octet-stream"}
    if cached is not None:
        headers["If-None-Match"] = cached.etag
    path = _path(fid, f"/{path_segment(version)}/weights")
    return key, cached, RequestOptions("GET", path, headers=headers, timeout=timeout)


def _weights_from_response(
    cache: WeightsCache,
    key: tuple[str, str],
    cached: CachedWeights | None,
    response: httpx.Response,
) -> dict[str, npt.NDArray[np.generic]]:
    """Decode the weights of a 200 (caching them) or serve the cached copy on a 304."""
    if response.status_code == 304:
        if cached is None:
            raise APIResponseValidationError(
                "304 Not Modified for weights the client never downloaded", response=response
            )
        data = cached.data
    else:
        data = response.content
        etag = response.headers.get("etag")
        if etag is not None:
            match = _SHA256_ETAG.match(etag)
            # The coordinator's ETag is the weights' sha256: check the bytes we got.
            if match and hashlib.sha256(data).hexdigest() != match.group(1).lower():
                raise APIResponseValidationError(
                    f"weights of version {key[1]} do not match their ETag {etag}",
                    response=response,
                )
            cache.put(key, CachedWeights(etag=etag, data=data))
    try:
        # safetensors only: received bytes are never unpickled (a pickle can run code).
        return decode_weights(data)
    except WireError as err:
        raise APIResponseValidationError(
            f"weights of version {key[1]} are not valid safetensors: {err}", response=response
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
        self, fid: str, version: VersionRef, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Download a model version's tensors (for ``mf``: ``item_factors``, ``item_bias``).

        The client keeps the last bytes per ``(fid, version)`` and revalidates them with
        ``If-None-Match``: when the coordinator answers 304 the cached bytes are used and
        nothing is downloaded again. The bytes are checked against the ``ETag`` (their
        sha256) and parsed as safetensors only; every call returns fresh arrays.

        Parameters
        ----------
        fid : str
            The federation id.
        version : int or "latest"
            The version number, or ``"latest"``.

        Returns
        -------
        dict of str to numpy.ndarray
            The model's tensors by name.
        """
        key, cached, options = _weights_request(self._client._weights_cache, fid, version, timeout)
        response = self._client._request(options)
        return _weights_from_response(self._client._weights_cache, key, cached, response)


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
        self, fid: str, version: VersionRef, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Download a model version's tensors, revalidating cached bytes by ``ETag``.

        See :meth:`Models.weights`.
        """
        key, cached, options = _weights_request(self._client._weights_cache, fid, version, timeout)
        response = await self._client._request(options)
        return _weights_from_response(self._client._weights_cache, key, cached, response)
