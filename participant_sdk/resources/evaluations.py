"""``client.evaluations``: report a participant's local evaluation of a model version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._base_client import TimeoutTypes, path_segment
from .._constants import NOT_GIVEN, NotGiven
from ..types import Evaluation, Split
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncEvaluations", "Evaluations"]


def _path(fid: str, version: int) -> str:
    return f"/v1/federations/{path_segment(fid)}/models/{int(version)}/evaluations"


def _body(split: str, metrics: Mapping[str, float], num_users: int) -> dict[str, Any]:
    # float()/int() also turn numpy scalars into JSON-serialisable numbers.
    return {
        "split": split,
        "metrics": {str(name): float(value) for name, value in metrics.items()},
        "num_users": int(num_users),
    }


class Evaluations(SyncAPIResource):
    """Participants' evaluations of global model versions."""

    def submit(
        self,
        fid: str,
        version: int,
        split: Split,
        metrics: Mapping[str, float],
        num_users: int,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Evaluation:
        """Report metrics of a model version on this participant's local split.

        A later report for the same version and split replaces the earlier one.

        Parameters
        ----------
        fid : str
            The federation id.
        version : int
            The model version evaluated.
        split : {"validation", "test"}
            Which local split.
        metrics : mapping of str to float
            E.g. ``{"ndcg@10": 0.041, "recall@10": 0.07}``.
        num_users : int
            Users evaluated; the weight of this report in the aggregate.

        Returns
        -------
        Evaluation
            The stored evaluation.
        """
        body = _body(split, metrics, num_users)
        return self._client._post(_path(fid, version), Evaluation, json=body, timeout=timeout)


class AsyncEvaluations(AsyncAPIResource):
    """Participants' evaluations (async twin of :class:`Evaluations`)."""

    async def submit(
        self,
        fid: str,
        version: int,
        split: Split,
        metrics: Mapping[str, float],
        num_users: int,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Evaluation:
        """Report metrics of a model version; see :meth:`Evaluations.submit`."""
        body = _body(split, metrics, num_users)
        path = _path(fid, version)
        return await self._client._post(path, Evaluation, json=body, timeout=timeout)
