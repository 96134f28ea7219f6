"""Base classes of the resource namespaces (``client.rounds``, ``client.models``, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._client import AsyncClient, Client

__all__ = ["AsyncAPIResource", "SyncAPIResource"]


class SyncAPIResource:
    """A group of related endpoints, bound to a :class:`~participant_sdk.Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client


class AsyncAPIResource:
    """A group of related endpoints, bound to an :class:`~participant_sdk.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
