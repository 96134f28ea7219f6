"""``contribute``: the SDK's whole secure-aggregation round over (mocked) HTTP.

The coordinator is a real ``SecAggRound`` behind ``httpx.MockTransport``; two peers run in
memory. One run shows the exact sum; the others show a coordinator asking the participant
for what the protocol forbids, and that nothing is sent then.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from coordinator.domain.secagg import Phase, SecAggRound
from participant_sdk import Client
from participant_sdk.secagg.client import SecAggClient, SecAggRefusal
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    ShareKeys,
    UnmaskResponse,
)
from participant_sdk.secagg.session import clip_to_norm, contribute

FID, NUMBER, LENGTH, CLIP = "fed-1", 4, 12, 1.0
ME, PEERS = "p00", ("p01", "p02")
CONTEXT = RoundContext(FID, NUMBER)
CODEC = FixedPointCodec(clip=CLIP, max_participants=3)


class SecAggCoordinator:
    """The coordinator's side for one round, peers included; ``tamper`` rewrites the
    unmask request the participant under test sees."""

    def __init__(self, tamper: dict[str, Any] | None = None) -> None:
        self.server = SecAggRound(
            context=CONTEXT, threshold=2, vector_length=LENGTH, clip=CLIP, max_participants=3
        )
        rng = np.random.default_rng(1)
        self.peers = {
            p: SecAggClient(
                context=CONTEXT,
                participant=p,
                update=clip_to_norm(rng.standard_normal(LENGTH), CLIP),
                codec=CODEC,
            )
            for p in PEERS
        }
        for peer in self.peers.values():
            self.server.receive_keys(peer.advertise())
        self.tamper = tamper
        self.posted: list[str] = []

    def status(self) -> dict[str, Any]:
        server, phase = self.server, self.server.phase
        request = None
        if phase is Phase.UNMASK:
            request = {**server.unmask_request().to_dict(), **(self.tamper or {})}
        return {
            "federation_id": FID,
            "round": NUMBER,
            "phase": phase.value,
            "threshold": 2,
            "clip_norm": CLIP,
            "max_participants": 3,
            "vector_length": LENGTH,
            "in_cohort": True,
            "answered": False,
            "roster": server.roster().to_dict() if phase is not Phase.ADVERTISE else None,
            "inbox": server.inbox(ME).to_dict() if phase is Phase.MASKED else None,
            "unmask_request": request,
            "survivors": list(server.survivors) if phase is Phase.DONE else None,
        }

    def post(self, kind: str, body: dict[str, Any]) -> None:
        self.posted.append(kind)
        server = self.server
        if kind == "keys":
            server.receive_keys(AdvertiseKeys.from_dict(body))
            roster = server.close_advertising()
            assert roster is not None
            for peer in self.peers.values():
                server.receive_shares(peer.share_keys(roster))
        elif kind == "shares":
            server.receive_shares(ShareKeys.from_dict(body))
            inboxes = server.close_sharing()
            assert inboxes is not None
            for p, peer in self.peers.items():
                server.receive_masked_input(peer.masked_input(inboxes[p]))
        elif kind == "masked-input":
            server.receive_masked_input(MaskedInput.from_dict(body))
            request = server.close_masked()
            assert request is not None
            for peer in self.peers.values():
                server.receive_unmask(peer.unmask(request))
        else:
            server.receive_unmask(UnmaskResponse.from_dict(body))
            server.finish()

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET":
            return httpx.Response(200, json=self.status())
        self.post(path.rsplit("/", 1)[1], json.loads(request.content))
        return httpx.Response(200, json=self.status())


@pytest.fixture
def coordinator() -> SecAggCoordinator:
    return SecAggCoordinator()


def run(coordinator: SecAggCoordinator, update: np.ndarray) -> Any:
    transport = httpx.MockTransport(coordinator.handle)
    with Client("http://coordinator.test", "token", transport=transport) as client:
        return contribute(client, FID, NUMBER, ME, update, sleep=lambda _: None)


def test_a_round_gives_the_exact_sum_of_the_clipped_inputs(coordinator: SecAggCoordinator) -> None:
    mine = np.random.default_rng(7).standard_normal(LENGTH) * 3  # norm > 1: clipped
    outcome = run(coordinator, mine)
    assert outcome.result == "summed"
    assert coordinator.posted == ["keys", "shares", "masked-input", "unmask"]
    encoded = [CODEC.encode(clip_to_norm(mine, CLIP))] + [
        p.encoded_input for p in coordinator.peers.values()
    ]
    want = (np.sum([e.astype(np.uint64) for e in encoded], axis=0) % 2**32).astype(np.uint32)
    np.testing.assert_array_equal(coordinator.server.result_words(), want)


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ({"survivors": list(PEERS), "dropped": [ME]}, "this participant as dropped"),
        ({"survivors": [ME, "p01", "p02"], "dropped": ["p01"]}, "both alive and dropped"),
        ({"survivors": [ME, "p01", "p01"], "dropped": ["p02"]}, "twice"),
        ({"survivors": [ME, "p01", "p09"], "dropped": ["p02"]}, "did not share keys"),
        ({"survivors": [ME], "dropped": list(PEERS)}, "fewer than the threshold"),
    ],
)
def test_an_inconsistent_unmask_request_is_refused_and_nothing_is_sent(
    tamper: dict[str, Any], why: str
) -> None:
    coordinator = SecAggCoordinator(tamper=tamper)
    with pytest.raises(SecAggRefusal, match=why):
        run(coordinator, np.zeros(LENGTH))
    assert coordinator.posted == ["keys", "shares", "masked-input"]  # no unmask answer
    assert coordinator.server.unmasked.keys() == set(PEERS)


def test_a_late_participant_sends_nothing(coordinator: SecAggCoordinator) -> None:
    coordinator.server.close_advertising()  # the round went on without us
    outcome = run(coordinator, np.zeros(LENGTH))
    assert outcome.result == "too-late"
    assert coordinator.posted == []


def test_an_update_of_the_wrong_length_is_refused_before_sending(
    coordinator: SecAggCoordinator,
) -> None:
    with pytest.raises(ValueError, match="the round sums 12"):
        run(coordinator, np.zeros(LENGTH + 1))
    assert coordinator.posted == []


def test_clipping_bounds_the_global_norm() -> None:
    big = np.full(16, 10.0)
    assert np.linalg.norm(clip_to_norm(big, 2.0)) == pytest.approx(2.0)
    small = np.full(4, 0.1)
    np.testing.assert_array_equal(clip_to_norm(small, 2.0), small)


def test_a_late_unmask_answer_still_counts_when_the_input_was_summed() -> None:
    class Late(SecAggCoordinator):
        def handle(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and request.url.path.endswith("/unmask"):
                self.posted.append("unmask")
                self.server.finish()  # the phase closed at its deadline, without us
                body = {
                    "type": "urn:fedrec:problem:round-closed",
                    "title": "Round closed",
                    "status": 409,
                    "detail": "round 4 is aggregating; the current round is 4",
                }
                return httpx.Response(409, json=body)
            return super().handle(request)

    coordinator = Late()
    outcome = run(coordinator, np.zeros(LENGTH))
    assert coordinator.server.phase is Phase.DONE
    assert ME in coordinator.server.survivors
    assert outcome.result == "summed"
