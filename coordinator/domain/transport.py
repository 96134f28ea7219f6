"""Compressed transport: which encoding a federation's updates and downloads use, and the
version weights stored in it.

The coordinator aggregates and keeps every version in float32 (the canonical bytes, the
version's ``sha256`` and chain hash). A federation whose ``transport.encoding`` is
``float16`` or ``int8`` also gets each version encoded that way when it is recorded
(deterministic: the same weights give the same bytes), stored as its own blob and named
in the version's signed manifest (``encodings``), so a participant verifies the exact
bytes it downloads in either encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.domain.context import Context
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.specs import ModelSpec, TransportPolicy
from coordinator.store.models import ModelVersion
from participant_sdk.wire import encode_model

__all__ = [
    "check_transport",
    "default_encoding",
    "encode_version",
    "offered_encodings",
    "version_blob",
]


def check_transport(
    model: ModelSpec, transport: TransportPolicy, *, secure_aggregation: bool
) -> None:
    """Refuse a compressed encoding where it cannot be honoured (422)."""
    if transport.encoding == "float32":
        return
    if model.kind == "ease":
        raise ValidationFailed(
            f"transport.encoding {transport.encoding!r} does not apply to model kind 'ease', "
            "whose participants' Grams are summed exactly; use 'float32'",
            field="transport.encoding",
        )
    if secure_aggregation:
        raise ValidationFailed(
            f"transport.encoding {transport.encoding!r} cannot be combined with secure "
            "aggregation, whose masked updates use their own fixed-point encoding; use "
            "'float32'",
            field="transport.encoding",
        )


def encode_version(
    ctx: Context,
    tensors: Mapping[str, npt.NDArray[np.generic]],
    transport: TransportPolicy,
    metadata: Mapping[str, str],
) -> dict[str, Any] | None:
    """Store the weights in the federation's compressed encoding (durably, before the
    version row names them); what ``ModelVersion.encodings`` records, None for float32."""
    if transport.encoding == "float32":
        return None
    data = encode_model(tensors, transport.encoding, metadata)
    return {transport.encoding: {"sha256": ctx.blobs.put(data), "size": len(data)}}


def offered_encodings(row: ModelVersion) -> tuple[str, ...]:
    """The encodings a version is served in: float32, and those it was recorded in."""
    return ("float32", *sorted(row.encodings or {}))


def default_encoding(row: ModelVersion) -> str:
    """What a download without ``?encoding=`` gets: the federation's encoding (the one
    compressed encoding its versions are recorded in), else float32."""
    return offered_encodings(row)[-1]


def version_blob(row: ModelVersion, encoding: str) -> tuple[str, int]:
    """(sha256, size) of the version's weights in ``encoding``; 422 when it is not offered."""
    if encoding == "float32":
        return row.sha256, row.size
    entry = (row.encodings or {}).get(encoding)
    if entry is None:
        raise ValidationFailed(
            f"version {row.version} is served in {', '.join(offered_encodings(row))}, not "
            f"{encoding!r}: the federation's transport.encoding decides",
            field="encoding",
            offered=list(offered_encodings(row)),
        )
    return str(entry["sha256"]), int(entry["size"])
