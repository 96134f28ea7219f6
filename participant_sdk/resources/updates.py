"""``client.updates``: upload a model update (safetensors, ``application/octet-stream``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .._base_client import RequestOptions, TimeoutTypes, path_segment
from .._constants import NOT_GIVEN, NotGiven
from ..types import Receipt
from ..wire import BASE_EVALUATION_HEADER, Encoding, encode_update
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncUpdates", "Updates"]

Rows = npt.NDArray[np.integer[Any]] | Sequence[int]


def _submit_request(
    fid: str,
    round: int,
    deltas: Mapping[str, npt.NDArray[Any]],
    *,
    base_version: int,
    num_examples: int,
    rows: Rows | None,
    encoding: Encoding,
    validation: tuple[Mapping[str, float], int] | None,
    timeout: TimeoutTypes | NotGiven,
) -> RequestOptions:
    body = encode_update(
        deltas,
        round=int(round),
        base_version=int(base_version),
        num_examples=int(num_examples),
        rows=None if rows is None else np.asarray(rows, dtype=np.int64),
        encoding=encoding,
    )
    headers = {"Content-Type": "application/octet-stream"}
    if validation is not None:
        metrics, num_users = validation
        headers[BASE_EVALUATION_HEADER] = json.dumps(
            {
                "split": "validation",
                # float()/int() also turn numpy scalars into JSON numbers
                "metrics": {str(name): float(value) for name, value in metrics.items()},
                "num_users": int(num_users),
            },
            separators=(",", ":"),
        )
    return RequestOptions(
        "PUT",
        f"/v1/federations/{path_segment(fid)}/rounds/{int(round)}/update",
        content=body,
        headers=headers,
        timeout=timeout,
    )


class Updates(SyncAPIResource):
    """Participants' model updates."""

    def submit(
        self,
        fid: str,
        round: int,
        deltas: Mapping[str, npt.NDArray[Any]],
        *,
        base_version: int,
        num_examples: int,
        rows: Rows | None = None,
        encoding: Encoding = "float32",
        validation: tuple[Mapping[str, float], int] | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Receipt:
        """Upload this participant's update for a round.

        The deltas are encoded with :func:`participant_sdk.wire.encode_update` and sent as
        ``application/octet-stream``. Retries of the upload carry the same
        ``Idempotency-Key``, and re-sending identical bytes returns the original receipt,
        so a retried upload is never counted twice.

        Parameters
        ----------
        fid : str
            The federation id.
        round : int
            The round the update is for (it must be open).
        deltas : mapping of str to numpy.ndarray
            Per model tensor, ``trained - base`` (cast to float32).
        base_version : int
            The model version the deltas were computed from (the round's ``base_version``).
        num_examples : int
            Local training examples: the update's weight in FedAvg.
        rows : array of int, optional
            For a row-sparse update: the ascending item rows the deltas hold.
        encoding : {"float32", "float16", "int8"}, optional
            The federation's ``transport.encoding`` (``Federation.transport``): the
            coordinator refuses updates in any other (422, ``.field == "encoding"``).
        validation : (metrics, num_users), optional
            This participant's validation figures of ``base_version``, recorded with the
            update (as :meth:`Evaluations.submit` with ``"validation"`` would) when the
            round advertises it (``Round.upload_takes_evaluation``); older coordinators
            ignore it. A refused upload records nothing.
        timeout : float, httpx.Timeout or None, optional
            Overrides the client's timeout for this call.

        Returns
        -------
        Receipt
            Proof that the coordinator durably stored the update.

        Raises
        ------
        RoundClosedError, FutureRoundError
            If the round is no longer, or not yet, open.
        UpdateConflictError
            If a different update for this round was already accepted.
        InvalidUpdateError
            If the coordinator rejects the update; ``.field`` names the culprit.
        """
        options = _submit_request(
            fid,
            round,
            deltas,
            base_version=base_version,
            num_examples=num_examples,
            rows=rows,
            encoding=encoding,
            validation=validation,
            timeout=timeout,
        )
        return self._client._call(options, Receipt)


class AsyncUpdates(AsyncAPIResource):
    """Participants' model updates (async twin of :class:`Updates`)."""

    async def submit(
        self,
        fid: str,
        round: int,
        deltas: Mapping[str, npt.NDArray[Any]],
        *,
        base_version: int,
        num_examples: int,
        rows: Rows | None = None,
        encoding: Encoding = "float32",
        validation: tuple[Mapping[str, float], int] | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Receipt:
        """Upload this participant's update for a round; see :meth:`Updates.submit`."""
        options = _submit_request(
            fid,
            round,
            deltas,
            base_version=base_version,
            num_examples=num_examples,
            rows=rows,
            encoding=encoding,
            validation=validation,
            timeout=timeout,
        )
        return await self._client._call(options, Receipt)
