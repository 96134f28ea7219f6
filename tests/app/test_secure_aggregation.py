"""Property tests of secure aggregation: the exact sum of the survivors, or an abort.

Each generated case is a whole round run by ``fedrec.secure_aggregation.run_round`` (real
clients, the coordinator's state machine, every message through JSON) with n in [3, 30], a
random threshold, and each participant dropping before sharing keys, before its masked
upload, after it, or not at all.
"""

from __future__ import annotations

import base64

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedrec.secure_aggregation import run_round
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext

LENGTH = 8
CLIP = 1.0
FATES = ("stays", "before_sharing", "before_upload", "after_upload")


@st.composite
def rounds(draw: st.DrawFn) -> tuple[int, int, list[str], int]:
    n = draw(st.integers(min_value=3, max_value=30))
    threshold = draw(st.integers(min_value=2, max_value=n))
    # weight "stays" so that both outcomes (sum and abort) are common
    fates = draw(st.lists(st.sampled_from(FATES + ("stays",) * 3), min_size=n, max_size=n))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return n, threshold, fates, seed


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rounds())
def test_exact_sum_of_survivors_or_abort(case: tuple[int, int, list[str], int]) -> None:
    n, threshold, fates, seed = case
    rng = np.random.default_rng(seed)
    ids = [f"participant-{i:02d}" for i in range(n)]
    # some inputs exceed the clip: the sum is of the clipped, encoded inputs
    updates = {p: rng.uniform(-1.5, 1.5, LENGTH) for p in ids}
    fate = dict(zip(ids, fates, strict=True))

    def dropping(kind: str) -> set[str]:
        return {p for p in ids if fate[p] == kind}

    outcome = run_round(
        updates,
        threshold=threshold,
        clip=CLIP,
        drop_before_sharing=dropping("before_sharing"),
        drop_before_upload=dropping("before_upload"),
        drop_after_upload=dropping("after_upload"),
    )
    shared = n - len(dropping("before_sharing"))
    uploaded = shared - len(dropping("before_upload"))
    answered = uploaded - len(dropping("after_upload"))
    should_abort = min(shared, uploaded, answered) < threshold

    # the server never receives anyone's encoded input in the clear
    for encoded in outcome.encoded.values():
        clear = base64.b64encode(encoded.astype("<u4").tobytes())
        assert all(clear not in body for body in outcome.server_received)

    event("abort" if should_abort else "exact sum")
    if should_abort:
        assert outcome.total is None
        assert outcome.words is None
        assert outcome.abort_reason is not None
        return
    assert outcome.abort_reason is None
    survivors = tuple(sorted(p for p in ids if fate[p] in ("stays", "after_upload")))
    assert outcome.survivors == survivors
    expected = np.zeros(LENGTH, dtype=np.uint64)
    for p in survivors:
        expected += outcome.encoded[p]
    assert outcome.words is not None
    assert np.array_equal(outcome.words, (expected % 2**32).astype(np.uint32))
    assert outcome.total is not None
    clipped = np.clip([updates[p] for p in survivors], -CLIP, CLIP).sum(axis=0)
    bound = FixedPointCodec(clip=CLIP, max_participants=n).max_sum_error
    assert np.abs(outcome.total - clipped).max() <= bound


def test_masks_of_one_round_do_not_cancel_in_another() -> None:
    # the same inputs in two rounds: the masked uploads differ, so one round's material is
    # useless in the other (the pair seeds are bound to federation and round)
    updates = {f"p{i}": np.full(LENGTH, 0.5) for i in range(4)}
    first = run_round(updates, threshold=3, clip=CLIP, context=RoundContext("f", 1))
    second = run_round(updates, threshold=3, clip=CLIP, context=RoundContext("f", 2))
    assert first.words is not None
    assert second.words is not None
    assert np.array_equal(first.words, second.words)
    uploads_first = {b for b in first.server_received if b"words" in b}
    uploads_second = {b for b in second.server_received if b"words" in b}
    assert len(uploads_first) == 4
    assert not uploads_first & uploads_second
