"""The byte format of model weights and updates: safetensors with string metadata.

This module is the single definition of the wire format; the coordinator imports it
rather than keeping its own copy. Received bytes are parsed with the safetensors
library only. Never pickle, never let numpy unpickle (``allow_pickle`` stays off): a pickle can run
arbitrary code on the receiver.

A **model** payload holds the model's tensors (for ``kind="mf"``: ``item_factors``
float32 ``num_items x dim`` and ``item_bias`` float32 ``num_items``; for ``kind="ease"``:
``ease_b`` float32 ``num_items x num_items``, or with ``ease_top_k`` the pruned pair
``ease_b_index``/``ease_b_value``, see :func:`ease_spec`). An ``ease`` update carries
``ease_gram`` (the participant's ``XᵀX``, flattened, its non-zero entries listed
row-sparse) instead of deltas.

An **update** payload holds, for each model tensor, the delta ``trained - base``, and
the metadata ``round``, ``base_version``, ``num_examples`` and ``update_kind``:

* ``dense`` — every tensor has the model's exact shape;
* ``row_sparse`` — an extra int64 tensor ``rows`` lists the distinct item rows the
  participant touched (ascending, in range); every model tensor then holds just
  those rows, in the same order.

An **encoding** says how the float tensors travel (a federation's ``transport.encoding``):

* ``float32`` — as they are (the canonical form: what the coordinator aggregates and
  stores; these bytes carry no ``encoding`` metadata, as before encodings existed);
* ``float16`` — each float tensor as IEEE half precision (values beyond ±65504 are
  refused, never saturated);
* ``int8`` — each float tensor ``t`` as int8 codes ``q`` in [-127, 127] plus a float32
  tensor ``t.scale`` with one positive scale per row (a 1-D tensor is one row), so that
  ``t ≈ q * scale``; the error is at most ``scale / 2`` = ``max|row| / 254`` per value.

Compressed payloads carry ``encoding`` in their metadata; ``rows`` stays int64.

A **manifest** is the signed record of one model version (canonical JSON: sorted keys,
no spaces): the federation, version number and count, parent, round, the weights'
sha256 and size, the chain hash, the server state's sha256, a digest of the
contributors, the creation time, the back-off fields and the privacy spent. The
coordinator signs it with its Ed25519 key; the weights download carries it base64 in
``X-Model-Manifest`` and the signature in ``X-Model-Signature``, and the SDK checks
both against a pinned public key before it uses the bytes (:func:`verify_manifest`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load

__all__ = [
    "BASE_EVALUATION_HEADER",
    "ENCODINGS",
    "ENCODING_HEADER",
    "Encoding",
    "MANIFEST_FORMAT",
    "MANIFEST_HEADER",
    "ROUND_HEADER",
    "ROWS_TENSOR",
    "SIGNATURE_HEADER",
    "Update",
    "UpdateKind",
    "TensorSpec",
    "WireError",
    "decode_model",
    "decode_update",
    "decode_weights",
    "ease_spec",
    "ease_update_spec",
    "encode_update",
    "encode_weights",
    "mf_spec",
    "contributors_digest",
    "encode_manifest",
    "encode_model",
    "representable",
    "read_metadata",
    "verify_manifest",
]

ROWS_TENSOR = "rows"
MANIFEST_FORMAT = "fedrec-model-version/1"
MANIFEST_HEADER = "X-Model-Manifest"
SIGNATURE_HEADER = "X-Model-Signature"
UpdateKind = Literal["dense", "row_sparse"]
Encoding = Literal["float32", "float16", "int8"]
ENCODINGS: tuple[Encoding, ...] = ("float32", "float16", "int8")
# the encoding of a weights download (a response header: the bytes say it too)
ENCODING_HEADER = "X-Model-Encoding"
# an upload may carry the participant's validation figures of the round's base version
# (JSON {"split": "validation", "metrics": {...}, "num_users": n}) when the round
# advertises it (Round.upload_takes_evaluation): one request instead of two
BASE_EVALUATION_HEADER = "X-Base-Evaluation"
# ``GET …/rounds/current/weights`` answers the round (the JSON of ``GET …/rounds/current``)
# in this header, beside the round's base weights when it has work for the caller
ROUND_HEADER = "X-Round"
# an int8 tensor's per-row scales travel as the tensor "<name>.scale"
SCALE_SUFFIX = ".scale"
_INT8_MAX = 127
_FLOAT16_MAX = float(np.finfo(np.float16).max)
# A safetensors header is JSON describing the tensors; anything larger is not a model of ours.
_MAX_HEADER_BYTES = 1 << 20


class WireError(ValueError):
    """The bytes are not a valid payload; ``field`` names what to fix."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class TensorSpec:
    """The expected name, dtype and shape of one model tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def mf_spec(*, num_items: int, dim: int) -> dict[str, TensorSpec]:
    """Tensor specs of a matrix-factorisation model: item factors and item biases."""
    return {
        "item_factors": TensorSpec("item_factors", "float32", (num_items, dim)),
        "item_bias": TensorSpec("item_bias", "float32", (num_items,)),
    }


def ease_spec(*, num_items: int, top_k: int | None = None) -> dict[str, TensorSpec]:
    """Tensor spec of an EASE model: the item-item weights ``B`` (zero diagonal), dense;
    or, pruned to ``top_k`` entries per column, ``ease_b_index`` (row ``j``: the source
    items ``i`` kept for target ``j``, ascending, exact integers in float32) and
    ``ease_b_value`` (their ``B_ij``), both ``num_items x top_k``."""
    if top_k is None:
        return {"ease_b": TensorSpec("ease_b", "float32", (num_items, num_items))}
    return {
        name: TensorSpec(name, "float32", (num_items, top_k))
        for name in ("ease_b_index", "ease_b_value")
    }


def ease_update_spec(*, num_items: int) -> dict[str, TensorSpec]:
    """Tensor spec of an EASE update: the participant's item Gram ``XᵀX`` flattened
    row-major to ``num_items²`` counts, sent ``row_sparse`` over its non-zero entries
    (``rows`` = the flat indices ``i * num_items + j``: a co-occurrence list, ~12 bytes a
    pair instead of ``4 num_items`` per item row), or with no rows once the Gram is in."""
    return {"ease_gram": TensorSpec("ease_gram", "float32", (num_items * num_items,))}


@dataclass
class Update:
    """A decoded, validated update."""

    round: int
    base_version: int
    num_examples: int
    tensors: dict[str, npt.NDArray[np.float32]]
    rows: npt.NDArray[np.int64] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> UpdateKind:
        return "dense" if self.rows is None else "row_sparse"

    def norm(self) -> float:
        """The global L2 norm over all the tensors' values (summed in float64)."""
        return math.sqrt(
            sum(float(np.square(t, dtype=np.float64).sum()) for t in self.tensors.values())
        )

    def norm_surely_within(self, bound: float) -> bool:
        """True only when ``norm() <= bound`` holds, proved without computing the norm:
        ``sqrt(n) * max|value|`` bounds it from above, and costs one float32 max and min
        per tensor instead of a float64 square and sum (~4 x less). False says nothing:
        the caller computes :meth:`norm`. A clipping bound (the default
        ``update_norm_clip`` is 10,000) is usually far above a round's deltas, so the
        exact norm, whose bits the clip factor depends on, is only needed near it.

        The margin: the float64 pairwise sum of exact float32 squares is within
        ``~100 * 2**-53`` (relative) of the true sum for any size below ``2**62``, and
        the bound's own two roundings within ``2**-52``; ``2**-30`` covers both, so
        ``True`` here implies ``norm() <= bound`` bit for bit (float32 tensors: their
        squares are exact in float64 and cannot overflow it). Non-finite values: False."""
        peak = 0.0
        size = 0
        for tensor in self.tensors.values():
            if not tensor.size:
                continue
            if tensor.dtype != np.float32:
                return False
            high, low = float(tensor.max()), float(tensor.min())  # NaN if any is NaN
            if not (math.isfinite(high) and math.isfinite(low)):
                return False
            peak = max(peak, high, -low)
            size += tensor.size
        return math.sqrt(size) * peak * (1 + 2**-30) <= bound


_DTYPE_CODES = {
    np.dtype(np.float16): "F16",
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int8): "I8",
    np.dtype(np.int16): "I16",
    np.dtype(np.int32): "I32",
    np.dtype(np.int64): "I64",
    np.dtype(np.uint8): "U8",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint64): "U64",
    np.dtype(np.bool_): "BOOL",
}


def encode_weights(
    tensors: Mapping[str, npt.NDArray[np.generic]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialise tensors into safetensors bytes, deterministically.

    The safetensors library orders the ``__metadata__`` map arbitrarily, so the same
    tensors could give different bytes (and sha256s) from run to run. This writer emits
    the same format with sorted keys: identical inputs always give identical bytes,
    which content addressing, idempotent retries and reproducible aggregation rely on.
    Parsing stays with the safetensors library.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    # the arrays themselves (little-endian, C order: views when they already are), copied
    # once by the join below; a tobytes() each first was a second model-sized copy (and,
    # above glibc's mmap threshold, a second round of page faults) per upload
    chunks: list[memoryview] = []
    offset = 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        native = array.dtype.newbyteorder("=")
        code = _DTYPE_CODES.get(native)
        if code is None:
            raise WireError(f"tensor '{name}' has unsupported dtype {array.dtype}", field=name)
        raw = np.ascontiguousarray(array, dtype=native.newbyteorder("<"))
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + raw.nbytes],
        }
        chunks.append(raw.data)
        offset += raw.nbytes
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    # the format pads the header with spaces so that the data starts 8-byte aligned
    encoded += b" " * (-len(encoded) % 8)
    return b"".join([struct.pack("<Q", len(encoded)), encoded, *chunks])


def read_metadata(data: bytes) -> dict[str, str]:
    """Return the ``__metadata__`` of a safetensors payload without loading tensors."""
    if len(data) < 8:
        raise WireError("body is too short to be safetensors (needs an 8-byte header length)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise WireError("safetensors header length is out of bounds")
    try:
        # decoded here: json.loads of bytes first guesses their encoding (UTF-8, -16 or
        # -32), which cost more than the parse; a safetensors header is UTF-8
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"safetensors header is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        # e.g. 100k nested '[': a real header nests three levels deep
        raise WireError("safetensors header nests too deeply to be a tensor index") from exc
    if not isinstance(header, dict):
        raise WireError("safetensors header must be a JSON object")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise WireError("safetensors __metadata__ must map strings to strings")
    return metadata


def decode_weights(data: bytes) -> dict[str, npt.NDArray[np.generic]]:
    """Parse safetensors bytes into numpy arrays (no validation against a spec)."""
    read_metadata(data)
    return _arrays(data)


def _arrays(data: bytes) -> dict[str, npt.NDArray[np.generic]]:
    """:func:`decode_weights` of bytes whose header :func:`read_metadata` already read."""
    try:
        return dict(_st_load(data))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise WireError(f"body is not valid safetensors: {exc}") from exc


def _check_encoding(encoding: str) -> Encoding:
    if encoding not in ENCODINGS:
        raise WireError(
            f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}", field="encoding"
        )
    return encoding


def _as_rows(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """The 2-D view quantization works on: one row per leading index (1-D: one row)."""
    if array.ndim >= 2:
        return array.reshape(array.shape[0], math.prod(array.shape[1:]))
    return array.reshape(1, array.size)


def _scale_shape(shape: tuple[int, ...]) -> tuple[int]:
    return (shape[0],) if len(shape) >= 2 else (1,)


def _quantize_int8(
    array: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric per-row int8: scale = max|row| / 127 (1 for a zero row, never 0)."""
    rows = _as_rows(array).astype(np.float64)
    peak = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
    scale = (peak / _INT8_MAX).astype(np.float32)
    # a row of tiny values whose scale underflows float32 keeps the smallest positive one
    scale = np.where(
        peak == 0, np.float32(1), np.maximum(scale, np.finfo(np.float32).smallest_subnormal)
    ).astype(np.float32)
    codes = np.clip(np.rint(rows / scale[:, None].astype(np.float64)), -_INT8_MAX, _INT8_MAX)
    return codes.astype(np.int8).reshape(array.shape), scale


def representable(tensors: Mapping[str, npt.NDArray[np.generic]], encoding: str) -> bool:
    """Whether every value fits the encoding (float16: at most 65504 in magnitude)."""
    if _check_encoding(encoding) != "float16":
        return True
    return all(
        not np.asarray(t).size or float(np.abs(np.asarray(t)).max()) <= _FLOAT16_MAX
        for t in tensors.values()
    )


def _compress(
    tensors: Mapping[str, npt.NDArray[np.generic]], encoding: str
) -> dict[str, npt.NDArray[np.generic]]:
    """Float tensors as they travel in ``encoding`` (int8: codes plus ``<name>.scale``)."""
    encoding = _check_encoding(encoding)
    out: dict[str, npt.NDArray[np.generic]] = {}
    for name, tensor in tensors.items():
        array = np.asarray(tensor, dtype=np.float32)
        if encoding == "float32":
            out[name] = array
        elif encoding == "float16":
            if array.size and not float(np.abs(array).max()) <= _FLOAT16_MAX:
                raise WireError(
                    f"tensor '{name}' has values beyond float16's range (±65504) or NaN; "
                    "use the int8 or float32 encoding",
                    field=name,
                )
            out[name] = array.astype(np.float16)
        else:
            out[name], out[name + SCALE_SUFFIX] = _quantize_int8(array)
    return out


def _decompress(
    arrays: Mapping[str, npt.NDArray[np.generic]],
    name: str,
    encoding: Encoding,
    shape: tuple[int, ...] | None,
) -> npt.NDArray[np.float32]:
    """Check one received tensor against the encoding (and ``shape`` when known) and
    return it as finite float32; :class:`WireError` names the tensor at fault."""
    array = arrays[name]
    wanted = {"float32": np.float32, "float16": np.float16, "int8": np.int8}[encoding]
    if array.dtype != np.dtype(wanted):
        raise WireError(
            f"tensor '{name}' must have dtype {encoding} (the federation's transport "
            f"encoding), got {array.dtype}",
            field=name,
        )
    if shape is not None and tuple(array.shape) != shape:
        raise WireError(
            f"tensor '{name}' must have shape {list(shape)}, got {list(array.shape)}", field=name
        )
    if encoding != "int8":
        values = array.astype(np.float32, copy=False)
    else:
        scale_name = name + SCALE_SUFFIX
        raw_scale = arrays.get(scale_name)
        expected = _scale_shape(tuple(array.shape))
        if raw_scale is None:
            raise WireError(f"tensor '{scale_name}' (int8 scales) is missing", field=scale_name)
        if raw_scale.dtype != np.float32 or tuple(raw_scale.shape) != expected:
            raise WireError(
                f"tensor '{scale_name}' must be float32 of shape {list(expected)}, got "
                f"{raw_scale.dtype} {list(raw_scale.shape)}",
                field=scale_name,
            )
        scale = raw_scale.astype(np.float32, copy=False)
        if not bool((np.isfinite(scale) & (scale > 0)).all()):
            raise WireError(
                f"tensor '{scale_name}' must hold finite, positive scales", field=scale_name
            )
        if bool((array == -_INT8_MAX - 1).any()):
            raise WireError(
                f"tensor '{name}' holds -128; int8 codes are symmetric, in [-127, 127]",
                field=name,
            )
        with np.errstate(over="ignore"):  # an overflow is refused just below
            values = (_as_rows(array).astype(np.float32) * scale[:, None]).reshape(array.shape)
    if not bool(np.isfinite(values).all()):
        what = "its scales overflow float32" if encoding == "int8" else "it contains NaN or Inf"
        raise WireError(f"tensor '{name}' is not finite: {what}", field=name)
    return values


def encode_model(
    tensors: Mapping[str, npt.NDArray[np.generic]],
    encoding: str,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Serialise model weights in ``encoding``, deterministically (see the module doc);
    ``float32`` gives exactly :func:`encode_weights`' bytes."""
    encoding = _check_encoding(encoding)
    if encoding == "float32":
        return encode_weights(tensors, metadata)
    return encode_weights(_compress(tensors, encoding), {**(metadata or {}), "encoding": encoding})


def decode_model(data: bytes, encoding: str) -> dict[str, npt.NDArray[np.float32]]:
    """Parse weights sent in ``encoding`` and return them as float32 (validated: dtypes,
    int8 scales, finiteness)."""
    encoding = _check_encoding(encoding)
    sent = read_metadata(data).get("encoding", "float32")
    if sent != encoding:
        raise WireError(
            f"the weights are {sent!r}-encoded, expected {encoding!r}", field="encoding"
        )
    arrays = _arrays(data)  # the header was read above
    names = [n for n in arrays if not (encoding == "int8" and n.endswith(SCALE_SUFFIX))]
    if encoding == "int8":
        orphans = sorted(set(arrays) - set(names) - {n + SCALE_SUFFIX for n in names})
        if orphans:
            raise WireError(f"scales without a tensor: {', '.join(orphans)}", field=orphans[0])
    return {name: _decompress(arrays, name, encoding, None) for name in names}


def encode_update(
    deltas: Mapping[str, npt.NDArray[np.generic]],
    *,
    round: int,
    base_version: int,
    num_examples: int,
    rows: npt.NDArray[np.integer] | None = None,
    encoding: str = "float32",
) -> bytes:
    """Serialise an update: per-tensor deltas, optionally restricted to ``rows``, in the
    federation's ``encoding`` (``float32`` bytes are the same as before encodings)."""
    encoding = _check_encoding(encoding)
    tensors = _compress(deltas, encoding)
    kind: UpdateKind = "dense"
    if rows is not None:
        tensors[ROWS_TENSOR] = np.asarray(rows, dtype=np.int64)
        kind = "row_sparse"
    metadata = {
        "round": str(round),
        "base_version": str(base_version),
        "num_examples": str(num_examples),
        "update_kind": kind,
    }
    if encoding != "float32":
        metadata["encoding"] = encoding
    return encode_weights(tensors, metadata)


# ASCII digits only (str.isdigit() also accepts '²'), at most 18 of them: below 2^63,
# so the value fits any integer column and int() never meets Python's digit limit
_UINT = re.compile(r"[0-9]{1,18}")


def _positive_int(
    metadata: Mapping[str, str],
    key: str,
    *,
    allow_zero: bool = False,
    maximum: int | None = None,
) -> int:
    raw = metadata.get(key)
    if raw is None:
        raise WireError(f"metadata '{key}' is missing", field=key)
    if not _UINT.fullmatch(raw):
        raise WireError(
            f"metadata '{key}' must be a non-negative integer of at most 18 ASCII digits, "
            f"got {raw[:40]!r}",
            field=key,
        )
    value = int(raw)
    if value == 0 and not allow_zero:
        raise WireError(f"metadata '{key}' must be a positive integer, got 0", field=key)
    if maximum is not None and value > maximum:
        raise WireError(f"metadata '{key}' must be at most {maximum}, got {value}", field=key)
    return value


# the largest round and version number a coordinator stores (32-bit integer columns)
MAX_COUNTER = 2**31 - 1


def decode_update(
    data: bytes,
    spec: Mapping[str, TensorSpec],
    *,
    max_norm: float | None = None,
    max_num_examples: int | None = None,
    encoding: str = "float32",
) -> Update:
    """Parse and validate an update against the model spec; raise :class:`WireError`.

    Checks names, dtypes, shapes, finiteness, row indices and, when given, the update's
    global L2 norm against ``max_norm`` and ``num_examples`` against ``max_num_examples``.
    The update must be in ``encoding`` (the federation's, strictly: its metadata and
    every tensor's dtype; int8 scales finite and positive); the tensors come back float32.
    """
    encoding = _check_encoding(encoding)
    metadata = read_metadata(data)
    sent = metadata.get("encoding", "float32")
    if sent != encoding:
        raise WireError(
            f"metadata 'encoding' is {sent[:40]!r} but this federation's updates are "
            f"{encoding!r} (transport.encoding)",
            field="encoding",
        )
    round_number = _positive_int(metadata, "round", maximum=MAX_COUNTER)
    base_version = _positive_int(metadata, "base_version", allow_zero=True, maximum=MAX_COUNTER)
    num_examples = _positive_int(metadata, "num_examples", maximum=max_num_examples)
    kind = metadata.get("update_kind", "dense")
    if kind not in ("dense", "row_sparse"):
        raise WireError(
            f"metadata 'update_kind' must be 'dense' or 'row_sparse', got {kind!r}",
            field="update_kind",
        )
    arrays = _arrays(data)  # the header was read above: not twice per upload

    rows: npt.NDArray[np.int64] | None = None
    expected_names = set(spec)
    if encoding == "int8":
        expected_names |= {name + SCALE_SUFFIX for name in spec}
    if kind == "row_sparse":
        expected_names.add(ROWS_TENSOR)
    missing = sorted(expected_names - set(arrays))
    unknown = sorted(set(arrays) - expected_names)
    if missing:
        raise WireError(f"missing tensors: {', '.join(missing)}", field=missing[0])
    if unknown:
        raise WireError(f"unknown tensors: {', '.join(unknown)}", field=unknown[0])

    num_rows: int | None = None
    if kind == "row_sparse":
        raw_rows = arrays[ROWS_TENSOR]
        if raw_rows.dtype != np.int64 or raw_rows.ndim != 1:
            raise WireError("tensor 'rows' must be a 1-D int64 array", field=ROWS_TENSOR)
        rows = raw_rows.astype(np.int64, copy=False)
        limit = min(s.shape[0] for s in spec.values())
        if rows.size and (rows.min() < 0 or rows.max() >= limit):
            raise WireError(f"tensor 'rows' has indices outside [0, {limit})", field=ROWS_TENSOR)
        if rows.size > 1 and not bool(np.all(np.diff(rows) > 0)):
            raise WireError("tensor 'rows' must be strictly ascending", field=ROWS_TENSOR)
        num_rows = int(rows.size)

    tensors: dict[str, npt.NDArray[np.float32]] = {}
    for name, tensor_spec in spec.items():
        array = arrays[name]
        if encoding == "float32" and array.dtype != np.dtype(tensor_spec.dtype):
            raise WireError(
                f"tensor '{name}' must have dtype {tensor_spec.dtype}, got {array.dtype}",
                field=name,
            )
        expected_shape = tensor_spec.shape
        if num_rows is not None:
            expected_shape = (num_rows, *tensor_spec.shape[1:])
        tensors[name] = _decompress(arrays, name, encoding, expected_shape)
    update = Update(
        round=round_number,
        base_version=base_version,
        num_examples=num_examples,
        tensors=tensors,
        rows=rows,
        metadata=metadata,
    )
    if (
        max_norm is not None
        and not update.norm_surely_within(max_norm)
        and (norm := update.norm()) > max_norm
    ):
        raise WireError(f"update L2 norm {norm:.4g} exceeds the bound {max_norm:.4g}", field="norm")
    return update


def contributors_digest(contributors: Iterable[str]) -> str:
    """sha256 over the sorted contributing update digests (newline-joined): the manifest
    names the contributors by this digest, so it stays small enough for a header."""
    return hashlib.sha256("\n".join(sorted(contributors)).encode()).hexdigest()


def encode_manifest(fields: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a manifest: what is signed, stored and served."""
    return json.dumps(
        {"format": MANIFEST_FORMAT, **fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode()


# Every participant of a process checks the same manifest each round: the signature is a
# pure function of these three strings, so a verified triple is remembered (a refused one
# raises and is not). Bounded: a version's manifest is needed for a round or two.
@functools.lru_cache(maxsize=64)
def _verified_manifest(manifest_b64: str, signature_b64: str, public_key_b64: str) -> bytes:
    """The manifest's bytes once its signature verifies under the key; else WireError."""
    # imported here: only a client that downloads a model pays for it
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    manifest = _b64(manifest_b64, "the manifest")
    signature = _b64(signature_b64, "the signature")
    raw_key = _b64(public_key_b64, "the public key")
    if len(raw_key) != 32:
        raise WireError("the public key is not a raw 32-byte Ed25519 key")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, manifest)
    except InvalidSignature as exc:
        raise WireError("the manifest's signature does not verify under the pinned key") from exc
    return manifest


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise WireError(f"{what} is not base64") from exc


def verify_manifest(manifest_b64: str, signature_b64: str, public_key_b64: str) -> dict[str, Any]:
    """Check an Ed25519 signature over a manifest and return the manifest's fields.

    Raises :class:`WireError` if the signature does not verify under the public key,
    or if the manifest is not one of ours. The caller then checks the fields against
    what it downloaded (sha256, federation, version).
    """
    manifest = _verified_manifest(manifest_b64, signature_b64, public_key_b64)
    try:
        fields = json.loads(manifest)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError("the signed manifest is not JSON") from exc
    if not isinstance(fields, dict) or fields.get("format") != MANIFEST_FORMAT:
        raise WireError(f"the signed manifest is not a {MANIFEST_FORMAT} manifest")
    return fields
