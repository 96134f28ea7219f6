"""``client.secagg``: the secure-aggregation phases of a round, as plain JSON messages.

This resource only carries messages; building them (keys, shares, masks) is
:mod:`participant_sdk.secagg`, which the SDK core does not import.
:func:`participant_sdk.secagg.session.contribute` runs a whole round with both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .._base_client import TimeoutTypes, path_segment
from .._constants import NOT_GIVEN, NotGiven
from ..types import SecAggStatus
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncSecAgg", "MessageKind", "SecAgg"]

MessageKind = Literal["keys", "shares", "masked-input", "unmask"]
_KINDS = ("keys", "shares", "masked-input", "unmask")


def _path(fid: str, number: int, kind: str | None = None) -> str:
    path = f"/v1/federations/{path_segment(fid)}/rounds/{int(number)}/secagg"
    if kind is None:
        return path
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return f"{path}/{kind}"


class SecAgg(SyncAPIResource):
    """The secure-aggregation phases of a round."""

    def status(
        self, fid: str, number: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> SecAggStatus:
        """The round's phase, its encoding, and the message this participant needs next
        (its roster, inbox or unmask request)."""
        return self._client._get(_path(fid, number), SecAggStatus, timeout=timeout)

    def send(
        self,
        fid: str,
        number: int,
        kind: MessageKind,
        message: Mapping[str, Any],
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> SecAggStatus:
        """Send one phase's message (``message.to_dict()`` of a
        :mod:`participant_sdk.secagg.messages` message); returns this participant's view."""
        return self._client._post(
            _path(fid, number, kind), SecAggStatus, json=dict(message), timeout=timeout
        )


class AsyncSecAgg(AsyncAPIResource):
    """The secure-aggregation phases of a round (async twin of :class:`SecAgg`)."""

    async def status(
        self, fid: str, number: int, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> SecAggStatus:
        """See :meth:`SecAgg.status`."""
        return await self._client._get(_path(fid, number), SecAggStatus, timeout=timeout)

    async def send(
        self,
        fid: str,
        number: int,
        kind: MessageKind,
        message: Mapping[str, Any],
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> SecAggStatus:
        """See :meth:`SecAgg.send`."""
        return await self._client._post(
            _path(fid, number, kind), SecAggStatus, json=dict(message), timeout=timeout
        )
