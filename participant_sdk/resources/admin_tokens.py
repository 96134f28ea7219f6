"""``client.admin_tokens``: create (with a lifetime), list and revoke admin tokens."""

from __future__ import annotations

import builtins
from typing import Any

from .._base_client import TimeoutTypes, path_segment
from .._constants import NOT_GIVEN, NotGiven
from ..types import AdminToken, IssuedAdminToken, ItemList
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AdminTokens", "AsyncAdminTokens"]

_PATH = "/v1/admin/tokens"


def _body(name: str, expires_in_seconds: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if expires_in_seconds is not None:
        body["expires_in_seconds"] = expires_in_seconds
    return body


class AdminTokens(SyncAPIResource):
    """The coordinator's admin tokens (admin only)."""

    def create(
        self,
        name: str,
        *,
        expires_in_seconds: int | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> IssuedAdminToken:
        """Create an admin token.

        Parameters
        ----------
        name : str
            What it is for.
        expires_in_seconds : int, optional
            Its lifetime, 60 s to 366 days; default: the coordinator's
            ``FEDREC_ADMIN_TOKEN_TTL_SECONDS``.

        Returns
        -------
        IssuedAdminToken
            The token's record with its bearer ``token``, shown only this once.
        """
        return self._client._post(
            _PATH, IssuedAdminToken, json=_body(name, expires_in_seconds), timeout=timeout
        )

    def list(self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> builtins.list[AdminToken]:
        """Every admin token: active, expired and revoked, oldest first (no secrets)."""
        return self._client._get(_PATH, ItemList[AdminToken], timeout=timeout).items

    def revoke(self, token_id: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> AdminToken:
        """Revoke an admin token; it stops working at once. The last active one cannot
        be revoked (:class:`~participant_sdk.ConflictError`): create another first."""
        return self._client._delete(
            f"{_PATH}/{path_segment(token_id)}", AdminToken, timeout=timeout
        )


class AsyncAdminTokens(AsyncAPIResource):
    """The coordinator's admin tokens (async twin of :class:`AdminTokens`)."""

    async def create(
        self,
        name: str,
        *,
        expires_in_seconds: int | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> IssuedAdminToken:
        """Create an admin token (see :meth:`AdminTokens.create`)."""
        return await self._client._post(
            _PATH, IssuedAdminToken, json=_body(name, expires_in_seconds), timeout=timeout
        )

    async def list(
        self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[AdminToken]:
        """Every admin token (no secrets)."""
        return (await self._client._get(_PATH, ItemList[AdminToken], timeout=timeout)).items

    async def revoke(
        self, token_id: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> AdminToken:
        """Revoke an admin token (see :meth:`AdminTokens.revoke`)."""
        return await self._client._delete(
            f"{_PATH}/{path_segment(token_id)}", AdminToken, timeout=timeout
        )
