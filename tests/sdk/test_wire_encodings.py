"""Compressed encodings of the wire codec: float16, and int8 with a per-row scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from participant_sdk.wire import (
    ENCODINGS,
    WireError,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    encode_weights,
    mf_spec,
    read_metadata,
    representable,
)

SPEC = mf_spec(num_items=6, dim=4)


def _tensors(seed: int = 0, rows: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "item_factors": rng.standard_normal((rows, 4)).astype(np.float32),
        "item_bias": rng.standard_normal(rows).astype(np.float32),
    }


def _update(encoding: str, **overrides: np.ndarray) -> dict[str, np.ndarray]:
    """The raw tensors of a dense update in ``encoding``, for tampering."""
    from safetensors.numpy import load

    data = encode_update(_tensors(), round=1, base_version=0, num_examples=2, encoding=encoding)
    return {**load(data), **overrides}


def _send(tensors: dict[str, np.ndarray], encoding: str) -> bytes:
    meta = {"round": "1", "base_version": "0", "num_examples": "2", "update_kind": "dense"}
    if encoding != "float32":
        meta["encoding"] = encoding
    return encode_weights(tensors, meta)


class TestRoundTrips:
    def test_float32_bytes_are_unchanged_by_encodings(self) -> None:
        """A float32 federation's bytes (and so their sha256s) are those of before."""
        plain = encode_update(_tensors(), round=1, base_version=0, num_examples=2)
        assert (
            encode_update(_tensors(), round=1, base_version=0, num_examples=2, encoding="float32")
            == plain
        )
        assert "encoding" not in read_metadata(plain)
        assert encode_model(_tensors(), "float32", {"kind": "model"}) == encode_weights(
            _tensors(), {"kind": "model"}
        )

    def test_float16_is_exact_to_half_precision(self) -> None:
        data = encode_update(
            _tensors(), round=1, base_version=0, num_examples=2, encoding="float16"
        )
        update = decode_update(data, SPEC, encoding="float16")
        for name, value in _tensors().items():
            assert update.tensors[name].dtype == np.float32
            np.testing.assert_array_equal(update.tensors[name], value.astype(np.float16))

    @settings(max_examples=60, deadline=None)
    @given(
        arrays(
            np.float32,
            st.tuples(st.integers(1, 8), st.integers(1, 6)),
            elements=st.floats(-(2.0**100), 2.0**100, width=32),
        )
    )
    def test_int8_error_is_within_half_a_step_per_row(self, factors: np.ndarray) -> None:
        rows = factors.shape[0]
        tensors = {"item_factors": factors, "item_bias": factors[:, 0].copy()}
        spec = mf_spec(num_items=rows, dim=factors.shape[1])
        data = encode_update(tensors, round=1, base_version=0, num_examples=1, encoding="int8")
        decoded = decode_update(data, spec, encoding="int8").tensors
        peak = np.abs(factors).max(axis=1, keepdims=True).astype(np.float64)
        # half a quantization step (max|row| / 254), plus float32 rounding of q * scale and,
        # for rows so tiny that the scale is subnormal, its rounding times 127
        tiny = 128 * float(np.finfo(np.float32).smallest_subnormal)
        bound = peak / 254 * (1 + 1e-5) + tiny
        assert (np.abs(decoded["item_factors"] - factors.astype(np.float64)) <= bound).all()
        bias_bound = np.abs(tensors["item_bias"]).max() / 254 * (1 + 1e-5) + tiny
        assert (np.abs(decoded["item_bias"] - tensors["item_bias"]) <= bias_bound).all()

    def test_int8_keeps_zero_rows_exact(self) -> None:
        tensors = _tensors()
        tensors["item_factors"][2] = 0
        data = encode_update(tensors, round=1, base_version=0, num_examples=2, encoding="int8")
        decoded = decode_update(data, SPEC, encoding="int8").tensors["item_factors"]
        assert not decoded[2].any()

    @pytest.mark.parametrize("encoding", ENCODINGS)
    @pytest.mark.parametrize("touched", [[], [4], [0, 2, 5]])
    def test_row_sparse_updates(self, encoding: str, touched: list[int]) -> None:
        rows = np.array(touched, dtype=np.int64)
        deltas = {k: v[rows] for k, v in _tensors().items()}
        data = encode_update(
            deltas, round=1, base_version=0, num_examples=2, rows=rows, encoding=encoding
        )
        update = decode_update(data, SPEC, encoding=encoding)
        assert update.kind == "row_sparse"
        np.testing.assert_array_equal(update.rows, rows)
        for name, value in deltas.items():
            assert update.tensors[name].shape == value.shape
            np.testing.assert_allclose(update.tensors[name], value, atol=0.02)

    @pytest.mark.parametrize("encoding", ENCODINGS)
    def test_models_round_trip_deterministically(self, encoding: str) -> None:
        first = encode_model(_tensors(), encoding, {"kind": "model"})
        assert first == encode_model(_tensors(), encoding, {"kind": "model"})
        decoded = decode_model(first, encoding)
        for name, value in _tensors().items():
            np.testing.assert_allclose(decoded[name], value, atol=0.02)

    def test_compressed_sizes(self) -> None:
        """float16 halves the float bytes, int8 quarters them (plus a scale per row)."""
        big = _tensors(rows=1000)
        sizes = {e: len(encode_model(big, e)) for e in ENCODINGS}
        floats, header = 1000 * 5 * 4, 400
        assert floats <= sizes["float32"] <= floats + header
        assert floats / 2 <= sizes["float16"] <= floats / 2 + header
        assert floats / 4 + 1000 * 4 <= sizes["int8"] <= floats / 4 + 1000 * 4 + 4 + header


class TestMalformed:
    @pytest.mark.parametrize(
        ("sent", "expected"), [("float32", "int8"), ("float16", "float32"), ("int8", "float16")]
    )
    def test_another_encoding_is_refused(self, sent: str, expected: str) -> None:
        data = encode_update(_tensors(), round=1, base_version=0, num_examples=2, encoding=sent)
        with pytest.raises(WireError) as err:
            decode_update(data, SPEC, encoding=expected)
        assert err.value.field == "encoding"

    def test_wrong_dtype_under_the_right_metadata(self) -> None:
        tensors = _update("float16", item_bias=np.zeros(6, np.float32))
        with pytest.raises(WireError, match="dtype float16") as err:
            decode_update(_send(tensors, "float16"), SPEC, encoding="float16")
        assert err.value.field == "item_bias"

    @pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
    def test_int8_scales_must_be_finite_and_positive(self, bad: float) -> None:
        scale = np.ones(6, np.float32)
        scale[3] = bad
        tensors = _update("int8", **{"item_factors.scale": scale})
        with pytest.raises(WireError, match="finite, positive") as err:
            decode_update(_send(tensors, "int8"), SPEC, encoding="int8")
        assert err.value.field == "item_factors.scale"

    def test_int8_scales_that_overflow_are_refused(self) -> None:
        tensors = _update("int8", **{"item_bias.scale": np.array([3e38], np.float32)})
        tensors["item_bias"] = np.full(6, 100, np.int8)
        with pytest.raises(WireError, match="overflow") as err:
            decode_update(_send(tensors, "int8"), SPEC, encoding="int8")
        assert err.value.field == "item_bias"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("item_factors.scale", np.ones(7, np.float32)),  # a scale per row, not more
            ("item_factors.scale", np.ones(6, np.float16)),
            ("item_bias.scale", np.ones(6, np.float32)),  # a 1-D tensor is one row
        ],
    )
    def test_int8_scale_shape_and_dtype(self, name: str, value: np.ndarray) -> None:
        with pytest.raises(WireError) as err:
            decode_update(_send(_update("int8", **{name: value}), "int8"), SPEC, encoding="int8")
        assert err.value.field == name

    def test_int8_missing_scale(self) -> None:
        tensors = _update("int8")
        del tensors["item_bias.scale"]
        with pytest.raises(WireError, match="missing") as err:
            decode_update(_send(tensors, "int8"), SPEC, encoding="int8")
        assert err.value.field == "item_bias.scale"

    def test_int8_code_minus_128_is_refused(self) -> None:
        codes = np.zeros((6, 4), np.int8)
        codes[0, 0] = -128
        with pytest.raises(WireError, match="-127, 127"):
            decode_update(_send(_update("int8", item_factors=codes), "int8"), SPEC, encoding="int8")

    def test_oversized_tensor_is_refused(self) -> None:
        tensors = _update("float16", item_factors=np.zeros((7, 4), np.float16))
        with pytest.raises(WireError, match="shape") as err:
            decode_update(_send(tensors, "float16"), SPEC, encoding="float16")
        assert err.value.field == "item_factors"

    def test_float16_infinity_is_refused(self) -> None:
        tensors = _update("float16", item_bias=np.full(6, np.inf, np.float16))
        with pytest.raises(WireError, match="not finite"):
            decode_update(_send(tensors, "float16"), SPEC, encoding="float16")

    def test_float16_encoder_refuses_out_of_range_values(self) -> None:
        tensors = _tensors()
        tensors["item_bias"][0] = 1e5
        assert not representable(tensors, "float16")
        assert representable(tensors, "int8")
        with pytest.raises(WireError, match="float16's range") as err:
            encode_update(tensors, round=1, base_version=0, num_examples=1, encoding="float16")
        assert err.value.field == "item_bias"

    def test_unknown_encoding(self) -> None:
        with pytest.raises(WireError, match="must be one of"):
            encode_update(_tensors(), round=1, base_version=0, num_examples=1, encoding="int4")

    def test_model_in_another_encoding_is_refused(self) -> None:
        with pytest.raises(WireError, match="expected 'int8'"):
            decode_model(encode_model(_tensors(), "float16"), "int8")

    def test_model_with_orphan_scale_is_refused(self) -> None:
        from safetensors.numpy import load

        tensors = dict(load(encode_model(_tensors(), "int8")))
        tensors["ghost.scale"] = np.ones(1, np.float32)
        with pytest.raises(WireError, match="ghost.scale"):
            decode_model(encode_weights(tensors, {"encoding": "int8"}), "int8")
