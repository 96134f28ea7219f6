"""The public surface of ``participant_sdk.recsys``."""

from __future__ import annotations

import participant_sdk.recsys as recsys


def test_public_exports() -> None:
    assert sorted(recsys.__all__) == recsys.__all__
    for name in recsys.__all__:
        assert hasattr(recsys, name)


def test_simulation_only_pieces_live_in_the_app() -> None:
    for name in ("local_view", "make_synthetic", "partition_users"):
        assert not hasattr(recsys, name), name
