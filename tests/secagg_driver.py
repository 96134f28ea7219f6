"""Drives secure-aggregation clients and a server state machine phase by phase (in memory).

Shared by the client tests (tests/sdk/secagg/) and the server tests (tests/domain/), which
need a round brought to a given phase with real messages.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from coordinator.domain.secagg import SecAggRound
from participant_sdk.secagg.client import SecAggClient
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import Roster, ShareInbox, UnmaskRequest

CONTEXT = RoundContext("fed-1", 3)
LENGTH = 16
CLIP = 1.0


class Driver:
    """``n`` participants ``p00``… with random updates in [-1, 1], and the server."""

    def __init__(self, n: int, threshold: int, *, context: RoundContext = CONTEXT) -> None:
        rng = np.random.default_rng(n * 100 + threshold)
        self.codec = FixedPointCodec(clip=CLIP, max_participants=n)
        self.updates = {f"p{i:02d}": rng.uniform(-1, 1, LENGTH) for i in range(n)}
        self.clients = {
            p: SecAggClient(context=context, participant=p, update=u, codec=self.codec)
            for p, u in self.updates.items()
        }
        self.server = SecAggRound(
            context=context,
            threshold=threshold,
            vector_length=LENGTH,
            clip=CLIP,
            max_participants=n,
        )
        self.roster: Roster | None = None
        self.inboxes: dict[str, ShareInbox] = {}
        self.request: UnmaskRequest | None = None

    def advertise(self, skip: Collection[str] = ()) -> Roster:
        for p, client in self.clients.items():
            if p not in skip:
                self.server.receive_keys(client.advertise())
        roster = self.server.close_advertising()
        assert roster is not None
        self.roster = roster
        return roster

    def share(self, skip: Collection[str] = ()) -> dict[str, ShareInbox]:
        assert self.roster is not None
        for entry in self.roster.entries:
            if entry.participant not in skip:
                message = self.clients[entry.participant].share_keys(self.roster)
                self.server.receive_shares(message)
        inboxes = self.server.close_sharing()
        assert inboxes is not None
        self.inboxes = inboxes
        return inboxes

    def upload(self, skip: Collection[str] = ()) -> UnmaskRequest:
        for p, inbox in self.inboxes.items():
            if p not in skip:
                self.server.receive_masked_input(self.clients[p].masked_input(inbox))
        request = self.server.close_masked()
        assert request is not None
        self.request = request
        return request

    def unmask(self, skip: Collection[str] = ()) -> np.ndarray | None:
        assert self.request is not None
        for p in self.request.survivors:
            if p not in skip:
                self.server.receive_unmask(self.clients[p].unmask(self.request))
        return self.server.finish()

    def expected_words(self, survivors: tuple[str, ...]) -> np.ndarray:
        total = np.zeros(LENGTH, dtype=np.uint64)
        for p in survivors:
            total += self.clients[p].encoded_input
        return (total % 2**32).astype(np.uint32)
