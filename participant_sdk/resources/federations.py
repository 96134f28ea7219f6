"""``client.federations``: create, list and read federations, and their item catalog."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from .._base_client import BaseClient, TimeoutTypes, path_segment
from .._constants import NOT_GIVEN, NotGiven
from ..types import (
    DeployPolicy,
    Federation,
    ItemList,
    LimitsPolicy,
    ModelSpec,
    PrivacyPolicy,
    RoundPolicy,
    StrategySpec,
    Target,
    TransportPolicy,
)
from ._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["AsyncFederations", "Federations"]

_Spec = BaseModel | Mapping[str, Any]


def _learned(client: BaseClient, federation: Federation) -> Federation:
    """Remember the long-poll maxima a federation's answer advertises: the first wait of a
    participant (usually its first request about rounds) can then ask for the whole one."""
    if federation.max_wait_seconds is not None:
        client._learn_max_wait(federation.max_wait_seconds, federation.max_cohort_wait_seconds)
    return federation


def _dump(spec: _Spec) -> dict[str, Any]:
    if isinstance(spec, BaseModel):
        # Unset options are left out so the coordinator applies its defaults; an option
        # set to None on purpose is sent as null (e.g. ``update_norm_clip=None``: no clip,
        # as secure aggregation requires), which leaving it out could not say.
        body = spec.model_dump(mode="json", exclude_none=True)
        _merge(body, _explicit_nulls(spec))
        return body
    return dict(spec)


def _explicit_nulls(spec: BaseModel) -> dict[str, Any]:
    """The options of ``spec`` (nested ones too) that were set to None explicitly."""
    found: dict[str, Any] = {}
    for name in spec.model_fields_set:
        value = getattr(spec, name)
        if value is None:
            found[name] = None
        elif isinstance(value, BaseModel) and (nested := _explicit_nulls(value)):
            found[name] = nested
    return found


def _merge(body: dict[str, Any], nulls: dict[str, Any]) -> None:
    for name, value in nulls.items():
        if isinstance(value, dict):
            _merge(body.setdefault(name, {}), value)
        else:
            body[name] = None


def _create_body(
    name: str,
    model: ModelSpec | Mapping[str, Any],
    *,
    strategy: StrategySpec | Mapping[str, Any] | None,
    rounds: RoundPolicy | Mapping[str, Any] | None,
    catalog: Sequence[str] | None,
    target: Target | Mapping[str, Any] | None,
    deploy: DeployPolicy | Mapping[str, Any] | None,
    privacy: PrivacyPolicy | Mapping[str, Any] | None,
    limits: LimitsPolicy | Mapping[str, Any] | None = None,
    transport: TransportPolicy | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "model": _dump(model)}
    specs: dict[str, _Spec | None] = {
        "strategy": strategy,
        "rounds": rounds,
        "target": target,
        "deploy": deploy,
        "privacy": privacy,
        "limits": limits,
        "transport": transport,
    }
    body.update({key: _dump(spec) for key, spec in specs.items() if spec is not None})
    if catalog is not None:
        body["catalog"] = [str(item) for item in catalog]
    return body


def _path(fid: str | None = None, suffix: str = "") -> str:
    if fid is None:
        return "/v1/federations"
    return f"/v1/federations/{path_segment(fid)}{suffix}"


class Federations(SyncAPIResource):
    """Federations: one joint training job each."""

    def create(
        self,
        name: str,
        model: ModelSpec | Mapping[str, Any],
        *,
        strategy: StrategySpec | Mapping[str, Any] | None = None,
        rounds: RoundPolicy | Mapping[str, Any] | None = None,
        catalog: Sequence[str] | None = None,
        target: Target | Mapping[str, Any] | None = None,
        deploy: DeployPolicy | Mapping[str, Any] | None = None,
        privacy: PrivacyPolicy | Mapping[str, Any] | None = None,
        limits: LimitsPolicy | Mapping[str, Any] | None = None,
        transport: TransportPolicy | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Federation:
        """Create a federation (admin).

        Parameters
        ----------
        name : str
            A human-readable name.
        model : ModelSpec or mapping
            E.g. ``{"kind": "mf", "num_items": 1682, "dim": 64}``.
        strategy, rounds, target, deploy, privacy, limits : spec or mapping, optional
            Aggregation strategy, round policy, stopping target, deploy policy,
            privacy policy and the bounds on what participants report (e.g. the
            metric names at another ``k``); the coordinator's defaults when left out.
        transport : TransportPolicy or mapping, optional
            How updates and downloads travel, e.g. ``{"encoding": "float16"}``
            (float32 when left out).
        catalog : sequence of str, optional
            ``num_items`` distinct external item ids; row ``i`` is entry ``i``.
        timeout : float, httpx.Timeout or None, optional
            Overrides the client's timeout for this call.

        Returns
        -------
        Federation
            The new federation, with round 1 open.
        """
        body = _create_body(
            name,
            model,
            strategy=strategy,
            rounds=rounds,
            catalog=catalog,
            target=target,
            deploy=deploy,
            privacy=privacy,
            limits=limits,
            transport=transport,
        )
        return self._client._post(_path(), Federation, json=body, timeout=timeout)

    def list(self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> builtins.list[Federation]:
        """All federations (admin), or a participant's own.

        Returns
        -------
        list of Federation
        """
        return self._client._get(_path(), ItemList[Federation], timeout=timeout).items

    def get(self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Federation:
        """One federation by id.

        Raises
        ------
        NotFoundError
            If there is no such federation.
        """
        return _learned(self._client, self._client._get(_path(fid), Federation, timeout=timeout))

    def catalog(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[str]:
        """The federation's item catalog: external item ids, row ``i`` of the model first.

        Returns
        -------
        list of str
            Empty when the federation has no catalog.
        """
        return self._client._get(_path(fid, "/catalog"), ItemList[str], timeout=timeout).items


class AsyncFederations(AsyncAPIResource):
    """Federations: one joint training job each (async twin of :class:`Federations`)."""

    async def create(
        self,
        name: str,
        model: ModelSpec | Mapping[str, Any],
        *,
        strategy: StrategySpec | Mapping[str, Any] | None = None,
        rounds: RoundPolicy | Mapping[str, Any] | None = None,
        catalog: Sequence[str] | None = None,
        target: Target | Mapping[str, Any] | None = None,
        deploy: DeployPolicy | Mapping[str, Any] | None = None,
        privacy: PrivacyPolicy | Mapping[str, Any] | None = None,
        limits: LimitsPolicy | Mapping[str, Any] | None = None,
        transport: TransportPolicy | Mapping[str, Any] | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
    ) -> Federation:
        """Create a federation (admin); see :meth:`Federations.create`."""
        body = _create_body(
            name,
            model,
            strategy=strategy,
            rounds=rounds,
            catalog=catalog,
            target=target,
            deploy=deploy,
            privacy=privacy,
            limits=limits,
            transport=transport,
        )
        return await self._client._post(_path(), Federation, json=body, timeout=timeout)

    async def list(
        self, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[Federation]:
        """All federations (admin), or a participant's own."""
        return (await self._client._get(_path(), ItemList[Federation], timeout=timeout)).items

    async def get(self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN) -> Federation:
        """One federation by id."""
        return _learned(
            self._client, await self._client._get(_path(fid), Federation, timeout=timeout)
        )

    async def catalog(
        self, fid: str, *, timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    ) -> builtins.list[str]:
        """The federation's item catalog (empty when it has none)."""
        items = await self._client._get(_path(fid, "/catalog"), ItemList[str], timeout=timeout)
        return items.items
