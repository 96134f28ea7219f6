"""A round's close written by Core statements instead of the unit of work's flush.

Recording a round leaves two objects in the session's unit of work: the locked
federation (its round counters changed: ``completed_rounds``, ``latest_version``,
``current_round``) and the next round's new row. Flushed by the ORM at COMMIT they took
~0.6 ms of a small round's ~6 ms of CPU (bench/RESULTS.md, round-job-core); written here
they are one UPDATE of the changed columns and one INSERT, the objects detached so the
COMMIT's flush finds nothing to do. Anything else in the unit of work (a sampled round's
cohort, a stop's deployment, a failed round's bookkeeping) leaves it to the flush.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, inspect, update
from sqlalchemy.orm import ColumnProperty, InstanceState, Session

from coordinator.store.models import Federation, Round, new_id

__all__ = ["write_round_change"]


def write_round_change(session: Session, federation: Federation) -> bool:
    """Write the federation's changed columns and the next round's row now, by Core; True
    if written (both objects are then detached, keeping their values), False (nothing
    written) when the unit of work holds anything else, which the flush then writes."""
    pending = list(session.new)
    if len(pending) != 1 or not isinstance(pending[0], Round):
        return False
    if [obj for obj in session.dirty if session.is_modified(obj)] != [federation]:
        return False
    changed = _changed_columns(inspect(federation))
    next_round = pending[0]
    row = _column_values(inspect(next_round))
    if changed is None or row is None or next_round.federation_id != federation.id:
        return False
    if next_round.id is None:
        next_round.id = row["id"] = new_id()  # the flush would have drawn it the same way
    connection = session.connection()
    # built once: the columns to set are the parameters' names (compiled once per set)
    connection.execute(_UPDATE_FEDERATION, {**changed, "b_federation_id": federation.id})
    connection.execute(_INSERT_ROUND, row)
    session.expunge(next_round)
    session.expunge(federation)
    return True


_FEDERATIONS = cast(Table, Federation.__table__)
_UPDATE_FEDERATION = update(_FEDERATIONS).where(_FEDERATIONS.c.id == bindparam("b_federation_id"))
_INSERT_ROUND = insert(cast(Table, Round.__table__))


def _changed_columns(state: InstanceState[Any]) -> dict[str, Any] | None:
    """The changed plain columns of a loaded object, by column name; None if anything
    else changed (a relationship)."""
    values: dict[str, Any] = {}
    for key in state.committed_state:
        prop = state.mapper.attrs.get(key)
        if not isinstance(prop, ColumnProperty) or len(prop.columns) != 1:
            return None
        values[prop.columns[0].name] = state.dict.get(key)
    return values


def _column_values(state: InstanceState[Any]) -> dict[str, Any] | None:
    """The columns set on a new object, by column name (the others take their defaults,
    as in the flush); None if a relationship was set on it."""
    values: dict[str, Any] = {}
    for key, value in state.dict.items():
        prop = state.mapper.attrs.get(key)
        if prop is None:
            continue  # not mapped (the instance's own bookkeeping): the flush skips it too
        if not isinstance(prop, ColumnProperty) or len(prop.columns) != 1:
            return None
        values[prop.columns[0].name] = value
    return values
