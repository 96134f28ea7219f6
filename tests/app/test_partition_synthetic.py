"""Partitions and the synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.partition import local_view, partition_users
from fedrec.synthetic import make_synthetic


@pytest.mark.parametrize("scheme", ["iid", "skewed"])
def test_partition_covers_every_user_once(scheme: str) -> None:
    data = make_synthetic(seed=1)
    groups = partition_users(data, scheme, 5, seed=0)  # type: ignore[arg-type]
    assert len(groups) == 5
    every = np.concatenate(groups)
    assert sorted(every.tolist()) == list(range(data.num_users))
    sizes = [g.size for g in groups]
    assert max(sizes) - min(sizes) <= 1


def test_skewed_is_non_iid() -> None:
    data = make_synthetic(seed=1)

    def spread(groups: list[np.ndarray]) -> float:
        # total variation distance between each group's item distribution and the global one
        total = np.bincount(data.items, minlength=data.num_items) / len(data)
        out = 0.0
        for g in groups:
            view = local_view(data, g)
            local = np.bincount(view.items, minlength=data.num_items) / len(view)
            out += 0.5 * np.abs(local - total).sum()
        return out / len(groups)

    assert spread(partition_users(data, "skewed", 5)) > 1.3 * spread(
        partition_users(data, "iid", 5)
    )


def test_per_user_and_local_view() -> None:
    data = make_synthetic(num_users=20, seed=1)
    groups = partition_users(data, "per-user")
    assert len(groups) == 20
    view = local_view(data, groups[3])
    assert set(view.users.tolist()) == {0}
    assert view.user_ids == [data.user_ids[3]]
    assert len(view) == int((data.users == 3).sum())


def test_synthetic_is_deterministic() -> None:
    a, b = make_synthetic(seed=5), make_synthetic(seed=5)
    assert np.array_equal(a.users, b.users)
    assert np.array_equal(a.items, b.items)
    assert not np.array_equal(a.items, make_synthetic(seed=6).items)
