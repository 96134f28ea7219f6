"""The aggregation reads stored updates back as zero-copy views (no second decode): the
same numbers as the full decoder, and damaged or differently laid out bytes never read
past their end (they go through the full decoder and its errors)."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.domain.stored_updates import load_stored_update
from participant_sdk.wire import WireError, decode_update, encode_update, encode_weights, mf_spec

SPEC = mf_spec(num_items=30, dim=4)


def _deltas(rows: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "item_factors": rng.standard_normal((rows, 4)).astype(np.float32),
        "item_bias": rng.standard_normal(rows).astype(np.float32),
    }


@pytest.mark.parametrize("sparse", [False, True])
def test_views_match_the_decoder_without_copying(sparse: bool) -> None:
    rows = np.array([0, 3, 7, 29]) if sparse else None
    data = encode_update(
        _deltas(4 if sparse else 30), round=3, base_version=2, num_examples=17, rows=rows
    )
    viewed, decoded = load_stored_update(data, SPEC), decode_update(data, SPEC)
    assert (viewed.round, viewed.base_version, viewed.num_examples, viewed.kind) == (
        decoded.round,
        decoded.base_version,
        decoded.num_examples,
        decoded.kind,
    )
    assert viewed.tensors.keys() == decoded.tensors.keys()
    for name, array in viewed.tensors.items():
        np.testing.assert_array_equal(array, decoded.tensors[name])
        assert array.dtype == np.float32
        assert np.shares_memory(array, np.frombuffer(data, dtype=np.uint8))  # a view
        assert not array.flags.writeable
    if sparse:
        assert viewed.rows is not None
        np.testing.assert_array_equal(viewed.rows, rows)
    else:
        assert viewed.rows is None


def test_other_layouts_go_through_the_full_decoder() -> None:
    # float16 tensors (another encoding): not viewed as float32, refused by the decoder
    half = encode_weights(
        {k: v.astype(np.float16) for k, v in _deltas().items()},
        {"round": "1", "base_version": "0", "num_examples": "1", "update_kind": "dense"},
    )
    with pytest.raises(WireError, match="dtype"):
        load_stored_update(half, SPEC)


@pytest.mark.parametrize("cut", [1, 100, 500])
def test_truncated_bytes_raise_instead_of_reading_past_the_end(cut: int) -> None:
    data = encode_update(_deltas(), round=1, base_version=0, num_examples=1)
    with pytest.raises(WireError):
        load_stored_update(data[:-cut], SPEC)
