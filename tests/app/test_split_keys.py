"""Undated data: every participant of a simulation holds out the protocol's items."""

from __future__ import annotations

import numpy as np

from fedrec.partition import local_view, partition_users
from fedrec.simulation import _with_split_keys
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import (
    BPRConfig,
    IALSConfig,
    Interactions,
    leave_one_out,
    leave_one_out_keys,
)


def _pairs(part: Interactions) -> set[tuple[str, str]]:
    """(user id, item id) of each row: comparable across re-indexed views."""
    return {
        (part.user_ids[u], part.item_ids[i])
        for u, i in zip(part.users.tolist(), part.items.tolist(), strict=True)
    }


def _held_out(
    data: Interactions, groups: list[np.ndarray]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """The test pairs of the whole set's split, and the union of the participants' own."""
    whole = leave_one_out(data)
    global_test = _pairs(whole.test)
    local_test: set[tuple[str, str]] = set()
    for users in groups:
        local = leave_one_out(local_view(data, users))
        local_test |= _pairs(local.test)
    return global_test, local_test


def test_undated_participants_split_as_the_whole_set() -> None:
    data = make_synthetic(num_users=120, num_items=150, timestamps=False, seed=4)
    groups = partition_users(data, "iid", 4, seed=0)
    global_test, plain = _held_out(data, groups)
    assert plain != global_test  # each participant's own random keys: other test items
    keyed = _with_split_keys(data, IALSConfig())
    assert np.isfinite(keyed.timestamps).all()
    np.testing.assert_array_equal(keyed.timestamps, leave_one_out_keys(data))
    global_again, local = _held_out(keyed, groups)
    assert global_again == global_test
    assert local == global_test


def test_dated_data_and_recency_keep_their_timestamps() -> None:
    dated = make_synthetic(num_users=30, num_items=40, seed=1)
    assert _with_split_keys(dated, IALSConfig()) is dated
    undated = make_synthetic(num_users=30, num_items=40, timestamps=False, seed=1)
    # BPR's recency weighting would read random keys as times: left undated
    assert _with_split_keys(undated, BPRConfig(recency_window=10)) is undated
    assert np.isfinite(_with_split_keys(undated, BPRConfig(recency_window=0)).timestamps).all()
