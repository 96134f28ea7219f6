"""Updates as the aggregation reads them back: numpy views over bytes already validated.

An update's bytes passed :func:`participant_sdk.wire.decode_update` when they were
uploaded (names, dtypes, shapes, finiteness, row indices, the norm bound), and the
row that the aggregation reads names them by sha256. Decoding them again copied every
tensor out of the bytes and scanned it for NaN a second time. Here the tensors are
zero-copy, read-only views into the stored bytes. The layout is still checked (tensor
names, dtypes and shapes against the spec, offsets inside the bytes), so damaged bytes
raise instead of being read past their end; anything but the plain layout the wire
codec writes (another encoding) goes through the full decoder.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from participant_sdk.wire import ROWS_TENSOR, TensorSpec, Update, decode_update

__all__ = ["load_stored_update"]

_DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}
_SPEC_CODES = {"float32": "F32"}


def load_stored_update(
    data: bytes, spec: Mapping[str, TensorSpec], encoding: str = "float32"
) -> Update:
    """The update in ``data`` (bytes that passed ``decode_update`` at upload) as views;
    a compressed ``encoding`` (float16, int8) is decoded to float32 instead."""
    viewed = _views(data, spec) if encoding == "float32" else None
    return viewed if viewed is not None else decode_update(data, spec, encoding=encoding)


def _views(data: bytes, spec: Mapping[str, TensorSpec]) -> Update | None:
    """Views over the plain layout, or None when the bytes are laid out otherwise."""
    try:
        (header_len,) = struct.unpack_from("<Q", data)
        header: dict[str, Any] = json.loads(data[8 : 8 + header_len].decode("utf-8"))
        metadata = header.pop("__metadata__", {})
        sparse = metadata.get("update_kind", "dense") == "row_sparse"
        update = Update(
            round=int(metadata["round"]),
            base_version=int(metadata["base_version"]),
            num_examples=int(metadata["num_examples"]),
            tensors={},
            metadata=dict(metadata),
        )
    except (struct.error, ValueError, KeyError, TypeError, AttributeError):
        return None
    if set(header) != set(spec) | ({ROWS_TENSOR} if sparse else set()):
        return None
    start = 8 + header_len
    rows = _view(data, start, header[ROWS_TENSOR], "I64", None) if sparse else None
    if sparse and (rows is None or rows.ndim != 1):
        return None
    for name, tensor_spec in spec.items():
        code = _SPEC_CODES.get(tensor_spec.dtype)
        shape = tensor_spec.shape
        if rows is not None:
            shape = (rows.size, *shape[1:])
        array = _view(data, start, header[name], code, shape) if code else None
        if array is None:
            return None
        update.tensors[name] = array
    update.rows = rows
    return update


def _view(
    data: bytes, start: int, entry: Any, code: str, shape: tuple[int, ...] | None
) -> npt.NDArray[Any] | None:
    """A read-only view of one tensor, or None unless its entry matches ``code`` and
    ``shape`` (any shape when None) and its bytes lie inside ``data``."""
    if not isinstance(entry, dict) or entry.get("dtype") != code:
        return None
    found = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(found, list) or not all(isinstance(n, int) and n >= 0 for n in found):
        return None
    if shape is not None and tuple(found) != shape:
        return None
    if not (isinstance(offsets, list) and len(offsets) == 2):
        return None
    begin, end = offsets
    dtype = _DTYPES[code]
    count = math.prod(found)
    if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0:
        return None
    if end - begin != count * dtype.itemsize or start + end > len(data):
        return None
    view: npt.NDArray[Any] = np.frombuffer(data, dtype=dtype, count=count, offset=start + begin)
    return view.reshape(found)
