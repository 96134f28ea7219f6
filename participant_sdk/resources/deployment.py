"""``client.deployment``: the live model version of a federation (promote, roll back)."""

from __future__ import annotations

from .._base_client import TimeoutTypes, path_segment
from .._constants import NOT_GIVEN, NotGiven
from ..types import Deployment
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncDeployments", "Deployments"]


def _path(fid: str) -> str:
    return f"/v1/federations/{path_segment(fid)}/deployment"


class Deployments(SyncAPIResource):
    """Which model version is deployed, and its history."""

    def get(self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Deployment:
        """The deployed version and its history.

        Raises
        ------
        NotFoundError
            While nothing is deployed (problem slug ``not-found``).
        """
        return self._client._get(_path(fid), Deployment, timeout=timeout)

    def promote(
        self, fid: str, version: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> Deployment:
        """Deploy ``version`` (admin): a promotion, or a roll-back to an older version.

        Returns
        -------
        Deployment
            The deployment now live.
        """
        body = {"version": int(version)}
        return self._client._post(_path(fid), Deployment, json=body, timeout=timeout)


class AsyncDeployments(AsyncAPIResource):
    """Which model version is deployed (async twin of :class:`Deployments`)."""

    async def get(self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Deployment:
        """The deployed version and its history; 404 while nothing is deployed."""
        return await self._client._get(_path(fid), Deployment, timeout=timeout)

    async def promote(
        self, fid: str, version: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> Deployment:
        """Deploy ``version`` (admin): promote or roll back."""
        body = {"version": int(version)}
        return await self._client._post(_path(fid), Deployment, json=body, timeout=timeout)
