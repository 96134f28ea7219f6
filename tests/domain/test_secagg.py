"""The server's secure-aggregation state machine: each phase, sum-or-abort, durable state."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from coordinator.domain.secagg import InvalidSecAggMessage, Phase, SecAggPhaseConflict, SecAggRound
from participant_sdk.secagg import shamir
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import MaskedInput, ShareKeys
from tests.secagg_driver import CONTEXT, LENGTH, Driver


def _reload(server: SecAggRound) -> SecAggRound:
    """What a restarted coordinator reads back: the state through JSON."""
    return SecAggRound.from_dict(json.loads(json.dumps(server.to_dict())))


class TestHappyPath:
    def test_no_dropouts_gives_the_exact_sum(self) -> None:
        driver = Driver(5, 3)
        driver.advertise()
        driver.share()
        request = driver.upload()
        assert request.dropped == ()
        total = driver.unmask()
        assert total is not None
        assert driver.server.phase is Phase.DONE
        assert np.array_equal(
            driver.server.result_words(), driver.expected_words(request.survivors)
        )
        exact = np.sum([driver.updates[p] for p in request.survivors], axis=0)
        assert np.abs(total - exact).max() <= driver.codec.max_sum_error

    def test_dropouts_at_every_phase_still_give_the_survivors_sum(self) -> None:
        driver = Driver(8, 3)
        driver.advertise(skip={"p07"})  # never showed up
        driver.share(skip={"p06"})  # advertised, then vanished
        request = driver.upload(skip={"p05", "p04"})  # shared keys, never uploaded
        assert request.dropped == ("p04", "p05")
        total = driver.unmask(skip={"p03"})  # uploaded, never answered
        assert total is not None
        assert request.survivors == ("p00", "p01", "p02", "p03")
        assert np.array_equal(
            driver.server.result_words(), driver.expected_words(request.survivors)
        )

    def test_the_result_keeps_only_the_sum(self) -> None:
        driver = Driver(4, 2)
        driver.advertise()
        driver.share()
        driver.upload()
        driver.unmask()
        state = driver.server.to_dict()
        assert state["masked"] == {}
        assert state["shares"] == []
        assert state["unmasked"] == []
        assert state["result"] is not None


class TestAbort:
    def test_too_few_advertisements_abort(self) -> None:
        driver = Driver(4, 3)
        for p in ("p00", "p01"):
            driver.server.receive_keys(driver.clients[p].advertise())
        assert driver.server.close_advertising() is None
        assert driver.server.phase is Phase.ABORTED
        assert "2 participants advertised keys, fewer than the threshold 3" in str(
            driver.server.abort_reason
        )

    def test_too_few_sharers_abort(self) -> None:
        driver = Driver(4, 3)
        driver.advertise()
        roster = driver.roster
        assert roster is not None
        for p in ("p00", "p01"):
            driver.server.receive_shares(driver.clients[p].share_keys(roster))
        assert driver.server.close_sharing() is None
        assert driver.server.phase is Phase.ABORTED
        assert driver.server.to_dict()["shares"] == []

    def test_too_few_uploads_abort_and_delete_masked_inputs(self) -> None:
        driver = Driver(4, 3)
        driver.advertise()
        inboxes = driver.share()
        for p in ("p00", "p01"):
            driver.server.receive_masked_input(driver.clients[p].masked_input(inboxes[p]))
        assert driver.server.masked
        assert driver.server.close_masked() is None
        assert driver.server.phase is Phase.ABORTED
        assert driver.server.masked == {}

    def test_too_few_unmask_answers_abort_with_nothing_published(self) -> None:
        driver = Driver(5, 4)
        driver.advertise()
        driver.share()
        driver.upload()
        assert driver.unmask(skip={"p00", "p01"}) is None
        assert driver.server.phase is Phase.ABORTED
        assert driver.server.result is None
        assert driver.server.masked == {}
        with pytest.raises(SecAggPhaseConflict, match="no result"):
            driver.server.result_words()

    def test_a_tampered_seed_share_aborts_naming_its_owner(self) -> None:
        driver = Driver(4, 3)
        driver.advertise()
        driver.share()
        request = driver.upload()
        responses = [driver.clients[p].unmask(request) for p in ("p00", "p01", "p02")]
        forged = dict(responses[0].self_mask_shares)
        forged["p03"] = (1).to_bytes(shamir.SHARE_BYTES, "big")
        responses[0] = dataclasses.replace(responses[0], self_mask_shares=forged)
        for response in responses:
            driver.server.receive_unmask(response)
        assert driver.server.finish() is None
        assert driver.server.phase is Phase.ABORTED
        assert "p03" in str(driver.server.abort_reason)

    def test_consistently_forged_seed_shares_fail_the_commitment(self) -> None:
        # shares moved coherently (a sharing of 1 added to each) interpolate to seed + 1:
        # Shamir alone cannot notice; the commitment advertised in phase 1 does
        driver = Driver(4, 3)
        driver.advertise()
        driver.share()
        request = driver.upload()
        assert driver.roster is not None
        points = {p: driver.roster.share_point(p) for p in ("p00", "p01", "p02")}
        delta = shamir.split((1).to_bytes(32, "big"), xs=list(points.values()), threshold=3)
        for p, x in points.items():
            response = driver.clients[p].unmask(request)
            value = int.from_bytes(response.self_mask_shares["p03"], "big")
            value = (value + int.from_bytes(delta[x], "big")) % shamir.PRIME
            forged = {**response.self_mask_shares, "p03": value.to_bytes(shamir.SHARE_BYTES, "big")}
            driver.server.receive_unmask(dataclasses.replace(response, self_mask_shares=forged))
        assert driver.server.finish() is None
        assert "self-mask seed of 'p03' fails its commitment" in str(driver.server.abort_reason)

    def test_a_tampered_share_among_extra_answers_is_caught(self) -> None:
        driver = Driver(5, 3)
        driver.advertise()
        driver.share()
        request = driver.upload(skip={"p04"})
        responses = [driver.clients[p].unmask(request) for p in request.survivors]
        forged = dict(responses[3].mask_key_shares)
        forged["p04"] = (7).to_bytes(shamir.SHARE_BYTES, "big")
        responses[3] = dataclasses.replace(responses[3], mask_key_shares=forged)
        for response in responses:
            driver.server.receive_unmask(response)
        assert driver.server.finish() is None
        assert "does not match the others" in str(driver.server.abort_reason)


class TestValidation:
    def test_message_of_another_round_is_refused(self) -> None:
        driver = Driver(3, 2)
        message = driver.clients["p00"].advertise()
        with pytest.raises(InvalidSecAggMessage, match="round 4"):
            driver.server.receive_keys(
                dataclasses.replace(message, context=RoundContext("fed-1", 4))
            )
        assert driver.server.advertised == {}

    def test_message_of_another_phase_is_a_conflict(self) -> None:
        driver = Driver(3, 2)
        driver.advertise()
        late = driver.clients["p00"]._advertisement()
        with pytest.raises(SecAggPhaseConflict, match="phase 'share'") as caught:
            driver.server.receive_keys(late)
        assert caught.value.status_code == 409

    def test_repeated_identical_keys_are_a_retry_and_other_keys_a_conflict(self) -> None:
        driver = Driver(3, 2)
        message = driver.clients["p00"].advertise()
        driver.server.receive_keys(message)
        driver.server.receive_keys(message)
        assert len(driver.server.advertised) == 1
        other = driver.clients["p01"].advertise()
        with pytest.raises(SecAggPhaseConflict, match="other keys"):
            driver.server.receive_keys(dataclasses.replace(other, participant="p00"))
        with pytest.raises(InvalidSecAggMessage, match="already in use"):
            driver.server.receive_keys(dataclasses.replace(message, participant="p01"))

    def test_shares_must_cover_exactly_the_other_roster_members(self) -> None:
        driver = Driver(4, 2)
        roster = driver.advertise()
        message = driver.clients["p00"].share_keys(roster)
        partial = dict(message.ciphertexts)
        del partial["p03"]
        with pytest.raises(InvalidSecAggMessage, match="exactly once") as caught:
            driver.server.receive_shares(dataclasses.replace(message, ciphertexts=partial))
        assert caught.value.extra["missing"] == ["p03"]
        stranger = ShareKeys(context=CONTEXT, participant="p99", ciphertexts=message.ciphertexts)
        with pytest.raises(InvalidSecAggMessage, match="did not advertise"):
            driver.server.receive_shares(stranger)
        short = {k: v[:-1] for k, v in message.ciphertexts.items()}
        with pytest.raises(InvalidSecAggMessage, match="bytes"):
            driver.server.receive_shares(dataclasses.replace(message, ciphertexts=short))
        assert driver.server.shares == {}

    def test_masked_input_must_have_the_round_length_and_come_from_a_sharer(self) -> None:
        driver = Driver(4, 2)
        driver.advertise()
        driver.share(skip={"p03"})
        with pytest.raises(InvalidSecAggMessage, match=f"{LENGTH} uint32 words"):
            driver.server.receive_masked_input(
                MaskedInput(context=CONTEXT, participant="p00", words=bytes(4 * LENGTH + 4))
            )
        with pytest.raises(InvalidSecAggMessage, match="did not share keys"):
            driver.server.receive_masked_input(
                MaskedInput(context=CONTEXT, participant="p03", words=bytes(4 * LENGTH))
            )
        assert driver.server.masked == {}

    def test_unmask_answer_must_cover_survivors_and_dropped_exactly(self) -> None:
        driver = Driver(4, 2)
        driver.advertise()
        driver.share()
        request = driver.upload(skip={"p03"})
        response = driver.clients["p00"].unmask(request)
        # a survivor's key share would let the server remove that survivor's pair masks
        leaking = dataclasses.replace(
            response, mask_key_shares={**response.mask_key_shares, "p01": bytes(66)}
        )
        with pytest.raises(InvalidSecAggMessage, match="nothing else"):
            driver.server.receive_unmask(leaking)
        with pytest.raises(InvalidSecAggMessage, match="not a survivor"):
            driver.server.receive_unmask(dataclasses.replace(response, participant="p03"))
        assert driver.server.unmasked == {}

    @pytest.mark.parametrize("threshold", [0, 1])
    def test_threshold_below_two_is_refused(self, threshold: int) -> None:
        with pytest.raises(ValueError, match="threshold"):
            SecAggRound(
                context=CONTEXT, threshold=threshold, vector_length=4, clip=1.0, max_participants=5
            )


class TestDurability:
    @pytest.mark.parametrize("restart_at", ["share", "masked", "unmask"])
    def test_a_restart_between_phases_gives_the_same_sum(self, restart_at: str) -> None:
        driver = Driver(6, 3)
        driver.advertise()
        if restart_at == "share":
            driver.server = _reload(driver.server)
        driver.share(skip={"p05"})
        if restart_at == "masked":
            driver.server = _reload(driver.server)
        request = driver.upload(skip={"p04"})
        if restart_at == "unmask":
            driver.server = _reload(driver.server)
        total = driver.unmask()
        assert total is not None
        assert np.array_equal(
            driver.server.result_words(), driver.expected_words(request.survivors)
        )

    def test_state_survives_json_unchanged(self) -> None:
        driver = Driver(4, 2)
        driver.advertise()
        driver.share()
        driver.upload(skip={"p01"})
        state = driver.server.to_dict()
        assert _reload(driver.server).to_dict() == state

    @pytest.mark.parametrize(
        ("key", "value"),
        [("phase", "dancing"), ("survivors", "p00"), ("masked", {"p00": "not base64!"})],
    )
    def test_malformed_state_is_refused(self, key: str, value: object) -> None:
        state = Driver(3, 2).server.to_dict()
        state[key] = value
        with pytest.raises(InvalidSecAggMessage, match="malformed"):
            SecAggRound.from_dict(state)
