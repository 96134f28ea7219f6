"""Property tests of SecAgg+ (the sparse Harary graph): the exact sum of the survivors, or
an abort exactly when the drawn graph cannot recover the dropouts.

Each generated case is a whole round run by ``fedrec.secure_aggregation.run_round`` (real
clients, the coordinator's state machine, every message through JSON) with n in [3, 30], a
random even degree, random global and neighbourhood thresholds, and each participant
dropping before sharing keys, before its masked upload, after it, or not at all. The
oracle below restates the recovery rules from the drawn graph alone.
"""

from __future__ import annotations

import base64
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from coordinator.domain.secagg import connected_parts, default_degree, harary_neighbours
from fedrec.secure_aggregation import run_round
from participant_sdk.secagg.fixed_point import FixedPointCodec

LENGTH = 8
CLIP = 1.0
FATES = ("stays", "before_sharing", "before_upload", "after_upload")


@st.composite
def rounds(draw: st.DrawFn) -> tuple[int, int, int, int, list[str], int]:
    n = draw(st.integers(min_value=3, max_value=30))
    threshold = draw(st.integers(min_value=2, max_value=n))
    degree = 2 * draw(st.integers(min_value=1, max_value=6))
    neighbour_threshold = draw(st.integers(min_value=2, max_value=degree + 1))
    # weight "stays" so that both outcomes (sum and abort) are common
    fates = draw(st.lists(st.sampled_from(FATES + ("stays",) * 6), min_size=n, max_size=n))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return n, threshold, degree, neighbour_threshold, fates, seed


def recoverable(
    neighbours: dict[str, frozenset[str]],
    t: int,
    threshold: int,
    shared: set[str],
    uploaded: set[str],
    answered: set[str],
) -> bool:
    """The oracle: whether the round can unmask exactly the survivors' sum."""
    if min(len(shared), len(uploaded), len(answered)) < threshold:
        return False

    def closed(p: str) -> frozenset[str]:
        return neighbours[p] | {p}

    if any(len(closed(s) & shared) < t for s in shared):
        return False  # a sharer's neighbourhood cannot hold its secrets
    dropped = shared - uploaded
    masked_with = {d: neighbours[d] & uploaded for d in dropped}
    if any(len(closed(s) & uploaded) < t for s in uploaded):
        return False
    if any(0 < len(m) < t for m in masked_with.values()):
        return False
    if connected_parts(uploaded, lambda p: neighbours[p]) > 1:
        return False  # each part's sum would show
    if any(len(closed(s) & answered) < t for s in uploaded):
        return False
    return all(len(neighbours[d] & answered) >= t for d, m in masked_with.items() if m)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rounds())
def test_sparse_graph_exact_sum_of_survivors_or_abort(
    case: tuple[int, int, int, int, list[str], int],
) -> None:
    n, threshold, degree, t, fates, seed = case
    rng = np.random.default_rng(seed)
    ids = [f"participant-{i:02d}" for i in range(n)]
    updates = {p: rng.uniform(-1.5, 1.5, LENGTH) for p in ids}
    fate = dict(zip(ids, fates, strict=True))

    def dropping(*kinds: str) -> set[str]:
        return {p for p in ids if fate[p] in kinds}

    outcome = run_round(
        updates,
        threshold=threshold,
        clip=CLIP,
        graph="harary",
        degree=degree,
        neighbour_threshold=t,
        drop_before_sharing=dropping("before_sharing"),
        drop_before_upload=dropping("before_upload"),
        drop_after_upload=dropping("after_upload"),
    )
    # the server never receives anyone's encoded input in the clear
    for encoded in outcome.encoded.values():
        clear = base64.b64encode(encoded.astype("<u4").tobytes())
        assert all(clear not in body for body in outcome.server_received)

    k = min(degree, n - 1)
    if t > k + 1 or n < threshold:  # no neighbourhood is large enough: abort at the draw
        event("abort at the draw")
        assert outcome.words is None
        assert outcome.abort_reason is not None
        return
    neighbours = outcome.neighbours
    # the drawn graph: k-regular and symmetric, over everyone that advertised
    assert set(neighbours) == set(ids)
    assert all(len(peers) == k and p not in peers for p, peers in neighbours.items())
    assert all(p in neighbours[q] for p, peers in neighbours.items() for q in peers)
    shared = set(ids) - dropping("before_sharing")
    uploaded = shared - dropping("before_upload")
    answered = uploaded - dropping("after_upload")
    if recoverable(neighbours, t, threshold, shared, uploaded, answered):
        event("exact sum")
        assert outcome.abort_reason is None
        assert outcome.survivors == tuple(sorted(uploaded))
        expected = np.zeros(LENGTH, dtype=np.uint64)
        for p in uploaded:
            expected += outcome.encoded[p]
        assert outcome.words is not None
        assert np.array_equal(outcome.words, (expected % 2**32).astype(np.uint32))
        assert outcome.total is not None
        clipped = np.clip([updates[p] for p in sorted(uploaded)], -CLIP, CLIP).sum(axis=0)
        bound = FixedPointCodec(clip=CLIP, max_participants=n).max_sum_error
        assert np.abs(outcome.total - clipped).max() <= bound
    else:
        event("abort")
        assert outcome.total is None
        assert outcome.words is None
        assert outcome.abort_reason is not None


@pytest.mark.parametrize("n", [3, 5, 8, 11])
@pytest.mark.parametrize("degree", [2, 4, 6])
def test_harary_graph_is_k_regular_and_k_connected(n: int, degree: int) -> None:
    ring = [f"p{i}" for i in range(n)]
    graph = harary_neighbours(ring, degree)
    k = min(degree, n - 1)
    assert all(len(peers) == k for peers in graph.values())
    assert all(p in graph[q] for p, peers in graph.items() for q in peers)
    # removing any k - 1 members leaves the rest connected (Harary: k-connected)
    for removed in itertools.combinations(ring, k - 1):
        rest = set(ring) - set(removed)
        assert connected_parts(rest, lambda p: graph[p]) == 1, removed


def test_sparse_clients_send_and_receive_o_k_not_o_n() -> None:
    """At n = 60 and k = 4 a participant's bytes are a fraction of the complete graph's."""
    updates = {f"p{i:02d}": np.zeros(LENGTH) for i in range(60)}
    complete = run_round(updates, threshold=31, clip=CLIP)
    sparse = run_round(updates, threshold=31, clip=CLIP, graph="harary", degree=4)
    assert complete.words is not None
    assert sparse.words is not None
    assert np.array_equal(complete.words, sparse.words)
    for measure in ("client_bytes_sent", "client_bytes_received"):
        dense_bytes = np.mean(list(getattr(complete, measure).values()))
        sparse_bytes = np.mean(list(getattr(sparse, measure).values()))
        assert sparse_bytes < dense_bytes / 5, measure


def test_default_degree_grows_with_log_n() -> None:
    assert [default_degree(n) for n in (3, 10, 50, 200, 1000)] == [4, 8, 12, 16, 20]
