"""The server's state machine on the SecAgg+ sparse graph: messages checked against the
drawn neighbourhoods, tampering caught, the drawn graph carried through a restart."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from coordinator.domain.secagg import InvalidSecAggMessage, Phase, SecAggRound
from participant_sdk.secagg import shamir
from participant_sdk.secagg.client import SecAggClient
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.messages import ShareKeys, UnmaskResponse
from tests.secagg_driver import CLIP, CONTEXT, LENGTH


class Sparse:
    """``n`` participants on a Harary graph of degree ``k``, phase by phase."""

    def __init__(self, n: int = 8, k: int = 2, t: int = 2, threshold: int = 3) -> None:
        rng = np.random.default_rng(n)
        codec = FixedPointCodec(clip=CLIP, max_participants=n)
        self.clients = {
            f"p{i:02d}": SecAggClient(
                context=CONTEXT,
                participant=f"p{i:02d}",
                update=rng.uniform(-1, 1, LENGTH),
                codec=codec,
            )
            for i in range(n)
        }
        self.server = SecAggRound(
            context=CONTEXT,
            threshold=threshold,
            vector_length=LENGTH,
            clip=CLIP,
            max_participants=n,
            graph="harary",
            degree=k,
            neighbour_threshold=t,
        )

    def advertise(self) -> None:
        for client in self.clients.values():
            self.server.receive_keys(client.advertise())
        assert self.server.close_advertising() is not None

    def share(self) -> dict[str, ShareKeys]:
        sent = {p: c.share_keys(self.server.roster(p)) for p, c in self.clients.items()}
        for message in sent.values():
            self.server.receive_shares(message)
        assert self.server.close_sharing() is not None
        return sent

    def upload(self, skip: frozenset[str] = frozenset()) -> None:
        for p, client in self.clients.items():
            if p not in skip:
                self.server.receive_masked_input(client.masked_input(self.server.inbox(p)))
        assert self.server.close_masked() is not None

    def answers(self) -> dict[str, UnmaskResponse]:
        return {
            p: self.clients[p].unmask(self.server.unmask_request(p)) for p in self.server.survivors
        }

    def encoded_sum(self, members: list[str]) -> np.ndarray:
        total = np.zeros(LENGTH, dtype=np.uint64)
        for p in members:
            total += self.clients[p].encoded_input
        return (total % 2**32).astype(np.uint32)


def test_shares_must_go_to_exactly_the_senders_neighbours() -> None:
    round_ = Sparse()
    round_.advertise()
    sender = "p00"
    message = round_.clients[sender].share_keys(round_.server.roster(sender))
    assert set(message.ciphertexts) == round_.server.neighbours(sender)
    outsider = sorted(set(round_.clients) - round_.server.neighbours(sender) - {sender})[0]
    forged = dataclasses.replace(
        message,
        ciphertexts={**message.ciphertexts, outsider: next(iter(message.ciphertexts.values()))},
    )
    with pytest.raises(InvalidSecAggMessage, match="exactly once"):
        round_.server.receive_shares(forged)
    round_.server.receive_shares(message)  # the genuine one is still welcome


def test_a_restart_keeps_the_graph_and_gives_the_exact_sum() -> None:
    round_ = Sparse()
    round_.advertise()
    before = {p: round_.server.neighbours(p) for p in round_.clients}
    round_.share()
    state = json.loads(json.dumps(round_.server.to_dict()))
    round_.server = SecAggRound.from_dict(state)
    assert {p: round_.server.neighbours(p) for p in round_.clients} == before
    round_.upload(skip=frozenset({"p03"}))
    for answer in round_.answers().values():
        round_.server.receive_unmask(answer)
    assert round_.server.finish() is not None
    survivors = sorted(set(round_.clients) - {"p03"})
    assert np.array_equal(round_.server.result_words(), round_.encoded_sum(survivors))


def test_an_unmask_answer_outside_the_neighbourhood_is_refused() -> None:
    round_ = Sparse()
    round_.advertise()
    round_.share()
    round_.upload()
    answers = round_.answers()
    responder = "p00"
    answer = answers[responder]
    stranger = sorted(set(round_.clients) - round_.server.neighbours(responder) - {responder})[0]
    forged = dataclasses.replace(
        answer,
        self_mask_shares={**answer.self_mask_shares, stranger: b"\x00" * shamir.SHARE_BYTES},
    )
    with pytest.raises(InvalidSecAggMessage, match="nothing else"):
        round_.server.receive_unmask(forged)


def test_a_tampered_share_aborts_the_round_with_nothing_kept() -> None:
    # k = 4, t = 2: each secret has up to 5 holders, so a changed share is off the polynomial
    round_ = Sparse(n=9, k=4, t=2)
    round_.advertise()
    round_.share()
    round_.upload()
    answers = round_.answers()
    victim = "p04"
    holder = sorted(round_.server.neighbours(victim))[0]
    answer = answers[holder]
    shares = dict(answer.self_mask_shares)
    share = bytearray(shares[victim])
    share[-1] ^= 1
    shares[victim] = bytes(share)
    answers[holder] = dataclasses.replace(answer, self_mask_shares=shares)
    for message in answers.values():
        round_.server.receive_unmask(message)
    assert round_.server.finish() is None
    assert round_.server.phase is Phase.ABORTED
    assert "reconstruction failed" in (round_.server.abort_reason or "")
    assert victim in (round_.server.abort_reason or "")
    assert (round_.server.masked, round_.server.shares) == ({}, {})


def test_a_neighbourhood_threshold_above_the_round_aborts_at_the_draw() -> None:
    round_ = Sparse(n=4, k=6, t=6, threshold=2)
    for client in round_.clients.values():
        round_.server.receive_keys(client.advertise())
    assert round_.server.close_advertising() is None
    assert "neighbourhood threshold 6 exceeds the 4 members" in (round_.server.abort_reason or "")


def test_unanswered_unmask_below_a_neighbourhood_threshold_aborts() -> None:
    round_ = Sparse(n=8, k=2, t=3, threshold=3)
    round_.advertise()
    round_.share()
    round_.upload()
    answers = round_.answers()
    # a survivor's closed neighbourhood is 3 with t = 3: one neighbour silent is one too many
    silent = sorted(round_.server.neighbours("p00"))[0]
    for p, message in answers.items():
        if p != silent:
            round_.server.receive_unmask(message)
    assert round_.server.finish() is None
    assert "fewer than the threshold 3" in (round_.server.abort_reason or "")
