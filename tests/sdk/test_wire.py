"""The safetensors wire codec shared by the SDK and the coordinator."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load, save

from participant_sdk.wire import (
    Update,
    WireError,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
    mf_spec,
    read_metadata,
)


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "item_factors": rng.standard_normal((5, 3)).astype(np.float32),
        "item_bias": rng.standard_normal(5).astype(np.float32),
    }


def test_encode_is_deterministic_and_readable_by_safetensors() -> None:
    meta = {"round": "1", "base_version": "0", "num_examples": "3", "update_kind": "dense"}
    first = encode_weights(_tensors(), meta)
    assert first == encode_weights(_tensors(), dict(reversed(list(meta.items()))))
    loaded = load(first)
    for name, array in _tensors().items():
        np.testing.assert_array_equal(loaded[name], array)
    assert read_metadata(first) == meta


def test_strided_big_endian_and_scalar_tensors_encode_as_their_little_endian_c_order_bytes() -> (
    None
):
    """The writer joins the arrays themselves (no tobytes() copy first): a transposed view,
    a big-endian array and a 0-d tensor still travel as little-endian C-order bytes."""
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensors = {
        "a_view": base.T,  # not C-contiguous
        "b_big": base.astype(">f4"),
        "c_scalar": np.array(7, dtype=np.int64),
    }
    data = encode_weights(tensors)
    (header_len,) = np.frombuffer(data[:8], dtype="<u8")
    body = data[8 + int(header_len) :]
    expected = b"".join(
        np.ascontiguousarray(tensors[name], dtype=tensors[name].dtype.newbyteorder("<")).tobytes()
        for name in sorted(tensors)
    )
    assert body == expected
    loaded = load(data)
    np.testing.assert_array_equal(loaded["a_view"], base.T)
    np.testing.assert_array_equal(loaded["b_big"], base)
    assert loaded["c_scalar"].shape == ()
    assert int(loaded["c_scalar"]) == 7


def test_decodes_library_written_bytes() -> None:
    data = save(_tensors(), metadata={"round": "2", "base_version": "1", "num_examples": "9"})
    update = decode_update(data, mf_spec(num_items=5, dim=3))
    assert (update.round, update.base_version, update.num_examples) == (2, 1, 9)
    assert update.kind == "dense"


def test_row_sparse_roundtrip() -> None:
    rows = np.array([0, 3], dtype=np.int64)
    deltas = {"item_factors": np.ones((2, 3), np.float32), "item_bias": np.ones(2, np.float32)}
    data = encode_update(deltas, round=1, base_version=0, num_examples=4, rows=rows)
    update = decode_update(data, mf_spec(num_items=5, dim=3))
    assert update.kind == "row_sparse"
    np.testing.assert_array_equal(update.rows, rows)


@pytest.mark.parametrize("rows", [[3, 1], [1, 1], [-1], [5]])
def test_bad_rows_rejected(rows: list[int]) -> None:
    n = len(rows)
    deltas = {"item_factors": np.ones((n, 3), np.float32), "item_bias": np.ones(n, np.float32)}
    data = encode_update(
        deltas, round=1, base_version=0, num_examples=4, rows=np.array(rows, np.int64)
    )
    with pytest.raises(WireError) as err:
        decode_update(data, mf_spec(num_items=5, dim=3))
    assert err.value.field == "rows"


def test_header_length_out_of_bounds() -> None:
    with pytest.raises(WireError, match="out of bounds"):
        decode_weights(b"\xff" * 8 + b"{}")


def test_norm_bound() -> None:
    data = encode_update(
        {"item_factors": np.full((5, 3), 1.0, np.float32), "item_bias": np.zeros(5, np.float32)},
        round=1,
        base_version=0,
        num_examples=1,
    )
    spec = mf_spec(num_items=5, dim=3)
    assert decode_update(data, spec, max_norm=4.0).num_examples == 1  # norm = sqrt(15) < 4
    with pytest.raises(WireError) as err:
        decode_update(data, spec, max_norm=3.0)
    assert err.value.field == "norm"


def test_an_update_header_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    rows = np.array([0, 3], dtype=np.int64)
    deltas = {"item_factors": np.ones((2, 3), np.float32), "item_bias": np.ones(2, np.float32)}
    data = encode_update(deltas, round=1, base_version=0, num_examples=4, rows=rows)
    parsed: list[object] = []
    loads = json.loads

    def counting(text: str | bytes) -> object:
        parsed.append(text)
        return loads(text)

    monkeypatch.setattr(json, "loads", counting)  # the module wire parses headers with
    update = decode_update(data, mf_spec(num_items=5, dim=3))
    assert len(parsed) == 1  # the coordinator decodes every upload: not twice
    np.testing.assert_array_equal(update.tensors["item_factors"], deltas["item_factors"])
    np.testing.assert_array_equal(update.rows, rows)


def test_a_header_that_is_not_utf8_is_refused() -> None:
    data = encode_weights(_tensors(), {"round": "1"})
    header_len = int.from_bytes(data[:8], "little")
    # the same length, one byte that is no UTF-8 inside a JSON string
    broken = data[:8] + data[8 : 8 + header_len].replace(b'"1"', b'"\xff"') + data[8 + header_len :]
    with pytest.raises(WireError, match="not valid JSON"):
        read_metadata(broken)
    with pytest.raises(WireError):
        decode_update(broken, mf_spec(num_items=5, dim=3))


def _update_of(tensors: dict[str, np.ndarray]) -> Update:
    return Update(round=1, base_version=0, num_examples=1, tensors=tensors)


def test_norm_surely_within_only_says_what_the_norm_says() -> None:
    """The cheap ``sqrt(n) * peak`` test answers True only where ``norm() <= bound``
    holds bit for bit, also at bounds one ulp around the norm and around its ceiling."""
    rng = np.random.default_rng(7)
    cases: list[dict[str, np.ndarray]] = [
        {"item_factors": np.full((64, 8), 0.1, np.float32)},  # the ceiling is the norm
        {"item_factors": np.full((3, 1), -3.0e38, np.float32)},  # float32's range
        {"item_factors": np.zeros((4, 2), np.float32), "item_bias": np.zeros(0, np.float32)},
    ]
    for _ in range(150):
        rows = int(rng.integers(1, 400))
        scale = 10.0 ** rng.uniform(-30, 30)
        cases.append(
            {
                "item_factors": (rng.standard_normal((rows, 8)) * scale).astype(np.float32),
                "item_bias": (rng.standard_normal(rows) * scale).astype(np.float32),
            }
        )
    shortcuts = 0
    for tensors in cases:
        update = _update_of(tensors)
        norm = update.norm()
        peak = max(float(np.abs(t).max()) for t in tensors.values() if t.size)
        ceiling = float(np.sqrt(sum(t.size for t in tensors.values()))) * peak
        for bound in (
            norm,
            np.nextafter(norm, 0.0),
            np.nextafter(norm, np.inf),
            ceiling,
            np.nextafter(ceiling, 0.0),
            ceiling * (1 + 2**-31),
            ceiling * (1 + 2**-29),
            ceiling * 2,
        ):
            if update.norm_surely_within(float(bound)):
                shortcuts += 1
                assert norm <= bound
        assert update.norm_surely_within(ceiling * 2)  # far enough: proved without the norm
        assert not update.norm_surely_within(float(np.nextafter(norm, 0.0))) or norm == 0
    assert shortcuts >= 2 * len(cases)


def test_norm_surely_within_is_false_for_values_it_cannot_bound() -> None:
    for bad in (np.nan, np.inf, -np.inf):
        factors = np.zeros((3, 2), np.float32)
        factors[1, 1] = bad
        assert not _update_of({"item_factors": factors}).norm_surely_within(1e300)
    # float64 squares are not exact: left to the norm
    wide = _update_of({"item_factors": np.full((2, 2), 1e-3, np.float64)})
    assert not wide.norm_surely_within(1e6)
    assert wide.norm() <= 1e6


def test_max_norm_refuses_what_it_refused_on_either_side_of_the_shortcut() -> None:
    spec = mf_spec(num_items=5, dim=3)
    factors = np.full((5, 3), 1.0, np.float32)
    factors[0, 0] = 2.0  # norm sqrt(18) = 4.243, ceiling sqrt(20) * 2 = 8.944
    data = encode_update(
        {"item_factors": factors, "item_bias": np.zeros(5, np.float32)},
        round=1,
        base_version=0,
        num_examples=1,
    )
    assert decode_update(data, spec, max_norm=9.0).num_examples == 1  # the shortcut
    assert decode_update(data, spec, max_norm=4.25).num_examples == 1  # the exact norm
    with pytest.raises(WireError, match="exceeds the bound") as err:
        decode_update(data, spec, max_norm=4.24)
    assert err.value.field == "norm"
    nan = factors.copy()
    nan[2, 2] = np.nan
    with pytest.raises(WireError, match="not finite"):
        decode_update(
            encode_update(
                {"item_factors": nan, "item_bias": np.zeros(5, np.float32)},
                round=1,
                base_version=0,
                num_examples=1,
            ),
            spec,
            max_norm=1e30,
        )
