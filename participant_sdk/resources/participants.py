"""``client.participants``: enrol, list, read and revoke participants."""

from __future__ import annotations

import builtins

from .._base_client import TimeoutTypes, path_segment
from .._constants import NOT_GIVEN, NotGiven
from ..types import EnrolledParticipant, ItemList, Participant
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncParticipants", "Participants"]


def _path(fid: str, suffix: str = "") -> str:
    return f"/v1/federations/{path_segment(fid)}/participants{suffix}"


class Participants(SyncAPIResource):
    """The organisations or devices enrolled in a federation."""

    def enrol(
        self, fid: str, name: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> EnrolledParticipant:
        """Enrol a participant (admin).

        Parameters
        ----------
        fid : str
            The federation id.
        name : str
            The participant's name.

        Returns
        -------
        EnrolledParticipant
            The participant with its bearer ``token``, shown only this once.
        """
        return self._client._post(
            _path(fid), EnrolledParticipant, json={"name": name}, timeout=timeout
        )

    def list(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[Participant]:
        """All participants of a federation (admin; no tokens)."""
        return self._client._get(_path(fid), ItemList[Participant], timeout=timeout).items

    def me(self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Participant:
        """The participant this client's token belongs to."""
        return self._client._get(_path(fid, "/me"), Participant, timeout=timeout)

    def refresh_token(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> EnrolledParticipant:
        """Replace this client's participant token with a new one (new expiry).

        The client uses the new token from now on; the old one keeps working for a short
        grace. Persist ``result.token`` if the process may restart.

        Returns
        -------
        EnrolledParticipant
            The participant with its new ``token`` and ``token_expires_at``.
        """
        result = self._client._post(_path(fid, "/me/token"), EnrolledParticipant, timeout=timeout)
        self._client._token = result.token
        return result

    def revoke(
        self, fid: str, pid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> Participant:
        """Revoke a participant's token (admin).

        Returns
        -------
        Participant
            The participant, now with ``state == "revoked"``.
        """
        path = _path(fid, f"/{path_segment(pid)}")
        return self._client._delete(path, Participant, timeout=timeout)


class AsyncParticipants(AsyncAPIResource):
    """The participants of a federation (async twin of :class:`Participants`)."""

    async def enrol(
        self, fid: str, name: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> EnrolledParticipant:
        """Enrol a participant (admin); the result carries its token."""
        return await self._client._post(
            _path(fid), EnrolledParticipant, json={"name": name}, timeout=timeout
        )

    async def refresh_token(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> EnrolledParticipant:
        """Replace this client's token with a new one (see :meth:`Participants.refresh_token`)."""
        result = await self._client._post(
            _path(fid, "/me/token"), EnrolledParticipant, timeout=timeout
        )
        self._client._token = result.token
        return result

    async def list(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[Participant]:
        """All participants of a federation (admin; no tokens)."""
        return (await self._client._get(_path(fid), ItemList[Participant], timeout=timeout)).items

    async def me(self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Participant:
        """The participant this client's token belongs to."""
        return await self._client._get(_path(fid, "/me"), Participant, timeout=timeout)

    async def revoke(
        self, fid: str, pid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> Participant:
        """Revoke a participant's token (admin)."""
        path = _path(fid, f"/{path_segment(pid)}")
        return await self._client._delete(path, Participant, timeout=timeout)
