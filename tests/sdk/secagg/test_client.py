"""The participant's state machine: each phase's checks, and refusals that send nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from participant_sdk.secagg.client import SecAggClient, SecAggRefusal
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import MessageError, Roster, ShareInbox, UnmaskRequest
from tests.secagg_driver import CONTEXT, Driver


def _at_unmask(n: int = 6, threshold: int = 3, dropped: tuple[str, ...] = ("p05",)) -> Driver:
    driver = Driver(n, threshold)
    driver.advertise()
    driver.share()
    driver.upload(skip=dropped)
    return driver


class TestUnmaskRefusals:
    """The server must never get both masks of one participant: inconsistent requests fail."""

    @pytest.mark.parametrize(
        ("survivors", "dropped", "reason"),
        [
            (("p00", "p01", "p02", "p03", "p04", "p05"), ("p05",), "both alive and dropped"),
            (("p01", "p02", "p03", "p04"), ("p00", "p05"), "this participant as dropped"),
            (("p00", "p01", "p02", "p03", "p04", "p99"), ("p05",), "did not share keys"),
            (("p00", "p00", "p01", "p02", "p03", "p04"), ("p05",), "twice"),
            (("p00", "p01", "p02", "p03", "p04"), ("p05", "p05"), "twice"),
            (("p00", "p01"), ("p02", "p03", "p04", "p05"), "fewer than the threshold"),
            (("p00", "p01", "p02", "p03"), ("p05",), "leaves out"),
            (("p01", "p02", "p03", "p04"), ("p05",), "not list this participant"),
        ],
    )
    def test_inconsistent_request_is_refused_and_nothing_is_sent(
        self, survivors: tuple[str, ...], dropped: tuple[str, ...], reason: str
    ) -> None:
        driver = _at_unmask()
        client = driver.clients["p00"]
        bad = UnmaskRequest(context=CONTEXT, survivors=survivors, dropped=dropped)
        with pytest.raises(SecAggRefusal, match=reason):
            client.unmask(bad)
        assert client.phase == "unmask"  # nothing was answered: a consistent request still works
        assert driver.request is not None
        response = client.unmask(driver.request)
        assert set(response.self_mask_shares) == set(driver.request.survivors)
        assert set(response.mask_key_shares) == {"p05"}

    def test_a_second_different_request_is_refused(self) -> None:
        driver = _at_unmask(dropped=("p04", "p05"))
        client = driver.clients["p00"]
        assert driver.request is not None
        first = client.unmask(driver.request)
        assert client.unmask(driver.request) == first  # a retry of the same request
        flipped = UnmaskRequest(
            context=CONTEXT,
            survivors=(*driver.request.survivors, "p05"),
            dropped=("p04",),
        )
        with pytest.raises(SecAggRefusal, match="already answered"):
            client.unmask(flipped)

    def test_request_of_another_round_is_refused(self) -> None:
        driver = _at_unmask()
        assert driver.request is not None
        other = dataclasses.replace(driver.request, context=RoundContext("fed-1", 4))
        with pytest.raises(SecAggRefusal, match="belongs to"):
            driver.clients["p00"].unmask(other)

    def test_tampered_share_message_is_refused(self) -> None:
        driver = Driver(5, 3)
        driver.advertise()
        inboxes = driver.share()
        inbox = inboxes["p00"]
        tampered = dict(inbox.ciphertexts)
        body = bytearray(tampered["p01"])
        body[20] ^= 1
        tampered["p01"] = bytes(body)
        client = driver.clients["p00"]
        client.masked_input(dataclasses.replace(inbox, ciphertexts=tampered))
        request = UnmaskRequest(
            context=CONTEXT, survivors=("p00", "p01", "p02", "p03", "p04"), dropped=()
        )
        with pytest.raises(SecAggRefusal, match="from p01 does not authenticate"):
            client.unmask(request)

    def test_share_message_moved_to_another_sender_is_refused(self) -> None:
        # the associated data names sender and recipient: p01's message cannot pass as p02's
        driver = Driver(5, 3)
        driver.advertise()
        inbox = driver.share()["p00"]
        swapped = dict(inbox.ciphertexts)
        swapped["p01"], swapped["p02"] = swapped["p02"], swapped["p01"]
        client = driver.clients["p00"]
        client.masked_input(dataclasses.replace(inbox, ciphertexts=swapped))
        request = UnmaskRequest(
            context=CONTEXT, survivors=("p00", "p01", "p02", "p03", "p04"), dropped=()
        )
        with pytest.raises(SecAggRefusal, match="does not authenticate"):
            client.unmask(request)


class TestRosterChecks:
    def _driver(self) -> Driver:
        driver = Driver(4, 3)
        driver.advertise()
        return driver

    def test_roster_that_changed_own_keys_is_refused(self) -> None:
        driver = self._driver()
        assert driver.roster is not None
        entries = list(driver.roster.entries)
        entries[0] = dataclasses.replace(entries[0], mask_key=entries[1].encryption_key)
        with pytest.raises(SecAggRefusal, match="unchanged"):
            driver.clients["p00"].share_keys(
                dataclasses.replace(driver.roster, entries=tuple(entries))
            )
        assert driver.clients["p00"].phase == "share"

    @pytest.mark.parametrize(("threshold", "reason"), [(1, "threshold 1"), (5, "threshold 5")])
    def test_roster_with_a_threshold_out_of_range_is_refused(
        self, threshold: int, reason: str
    ) -> None:
        driver = self._driver()
        assert driver.roster is not None
        with pytest.raises(SecAggRefusal, match=reason):
            driver.clients["p00"].share_keys(
                dataclasses.replace(driver.roster, threshold=threshold)
            )

    def test_roster_with_duplicate_or_unsorted_ids_is_refused(self) -> None:
        driver = self._driver()
        assert driver.roster is not None
        reordered = tuple(reversed(driver.roster.entries))
        with pytest.raises(SecAggRefusal, match="sorted"):
            driver.clients["p00"].share_keys(dataclasses.replace(driver.roster, entries=reordered))

    def test_roster_with_another_vector_length_is_refused(self) -> None:
        driver = self._driver()
        assert driver.roster is not None
        with pytest.raises(SecAggRefusal, match="sums 17 words"):
            driver.clients["p00"].share_keys(dataclasses.replace(driver.roster, vector_length=17))

    def test_keys_are_advertised_once(self) -> None:
        driver = self._driver()
        with pytest.raises(SecAggRefusal, match="once"):
            driver.clients["p00"].advertise()


class TestMaskedInput:
    def test_inbox_with_too_few_senders_is_refused(self) -> None:
        driver = Driver(5, 4)
        driver.advertise()
        inbox = driver.share()["p00"]
        few = {k: v for k, v in inbox.ciphertexts.items() if k in ("p01", "p02")}
        with pytest.raises(SecAggRefusal, match="fewer than the threshold 4"):
            driver.clients["p00"].masked_input(dataclasses.replace(inbox, ciphertexts=few))

    def test_inbox_for_someone_else_is_refused(self) -> None:
        driver = Driver(4, 3)
        driver.advertise()
        inboxes = driver.share()
        with pytest.raises(SecAggRefusal, match="another participant"):
            driver.clients["p00"].masked_input(inboxes["p01"])

    def test_masked_input_differs_from_the_encoded_input(self) -> None:
        driver = Driver(4, 3)
        driver.advertise()
        inbox: ShareInbox = driver.share()["p00"]
        client = driver.clients["p00"]
        masked = np.frombuffer(client.masked_input(inbox).words, dtype="<u4")
        assert masked.size == client.encoded_input.size
        assert not np.any(masked == client.encoded_input)


def test_update_length_and_codec_come_from_the_client() -> None:
    driver = Driver(3, 2)
    client = SecAggClient(
        context=CONTEXT, participant="px", update=np.zeros(16), codec=driver.codec
    )
    assert client.encoded_input.dtype == np.uint32
    assert not client.encoded_input.any()


class TestSparseRoster:
    """SecAgg+: a roster of the neighbourhood only, with each member's point in the round."""

    def _sparse(self) -> tuple[Driver, Roster]:
        driver = Driver(6, 3)
        driver.advertise()
        assert driver.roster is not None
        entries = tuple(e for e in driver.roster.entries if e.participant in {"p00", "p02", "p05"})
        points = {"p00": 1, "p02": 3, "p05": 6}
        return driver, dataclasses.replace(driver.roster, entries=entries, points=points, size=6)

    def test_shares_go_to_the_neighbours_only_at_their_round_points(self) -> None:
        driver, roster = self._sparse()
        again = Roster.from_dict(roster.to_dict())
        assert again == roster
        message = driver.clients["p00"].share_keys(again)
        assert set(message.ciphertexts) == {"p02", "p05"}

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"points": {"p00": 1, "p02": 3}}, "exactly the roster's participants"),
            ({"points": {"p00": 1, "p02": 3, "p05": 3}}, "share a Shamir point"),
            ({"points": {"p00": 0, "p02": 3, "p05": 6}}, "x >= 1"),
            ({"size": 5}, "at least its largest point"),
        ],
    )
    def test_a_malformed_sparse_roster_is_refused(
        self, change: dict[str, object], reason: str
    ) -> None:
        _, roster = self._sparse()
        with pytest.raises(MessageError, match=reason):
            Roster.from_dict({**roster.to_dict(), **change})

    def test_more_participants_than_the_encoding_allows_are_refused(self) -> None:
        driver, roster = self._sparse()
        too_many = dataclasses.replace(
            roster, size=driver.clients["p00"].codec.max_participants + 1
        )
        with pytest.raises(SecAggRefusal, match="exceed the encoding"):
            driver.clients["p00"].share_keys(too_many)
