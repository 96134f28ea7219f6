"""A round's commit asks for the validation scores up to three times (target, patience,
deploy policy): they are read once per transaction, equal to what ``aggregate_in``
reports, and read again after the session flushed a new report."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from coordinator.domain.context import Context
from coordinator.domain.evaluation import submit_evaluation
from coordinator.domain.metrics import aggregate_in, validation_scores
from coordinator.store.models import Evaluation, utc_now
from coordinator.store.repository import EvaluationRepository
from tests.factories import domain_federation


def test_scores_are_read_once_per_transaction_and_again_after_a_flush(ctx: Context) -> None:
    fid, (first, second, third) = domain_federation(ctx, 3)
    submit_evaluation(ctx, first, fid, 0, split="validation", metrics={"ndcg@10": 0.2}, num_users=3)
    submit_evaluation(
        ctx, second, fid, 0, split="validation", metrics={"ndcg@10": 0.6}, num_users=1
    )
    submit_evaluation(ctx, first, fid, 0, split="test", metrics={"ndcg@10": 0.9}, num_users=5)
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "evaluations" in statement:
            selects.append(statement)

    engine = ctx.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", count)
    try:
        with ctx.sessions.begin() as session:
            scores = [validation_scores(session, fid, "ndcg@10") for _ in range(3)]
            assert len(selects) == 1
            expected = {
                row.version: row.metrics["ndcg@10"]
                for row in aggregate_in(session, fid)
                if row.split == "validation"
            }
            assert scores == [expected] * 3
            assert scores[0][0] == (0.2 * 3 + 0.6 * 1) / 4  # weighted by users, test split apart
            assert validation_scores(session, fid, "recall@10") == {}

            selects.clear()
            session.add(
                Evaluation(
                    federation_id=fid,
                    version=0,
                    split="validation",
                    participant_id=third.participant_id,
                    metrics={"recall@10": 0.5},
                    num_users=4,
                    created_at=utc_now(),
                )
            )
            session.flush()
            assert validation_scores(session, fid, "recall@10") == {0: 0.5 * 4 / 8}
            assert len(selects) == 1
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_report_pending_in_the_session_is_among_the_scores_as_a_query_would_flush_it(
    ctx: Context,
) -> None:
    """The figures are read by a prebuilt statement, not through the session: the pending
    changes are flushed first all the same (the session's autoflush), and not inside a
    ``no_autoflush`` block, as a query through the session would do."""
    fid, (first, second) = domain_federation(ctx, 2)
    submit_evaluation(ctx, first, fid, 0, split="validation", metrics={"ndcg@10": 0.2}, num_users=3)

    def pending(session: Session) -> None:
        session.add(
            Evaluation(
                federation_id=fid,
                version=0,
                split="validation",
                participant_id=second.participant_id,
                metrics={"ndcg@10": 0.6},
                num_users=1,
                created_at=utc_now(),
            )
        )

    with ctx.sessions.begin() as session:
        pending(session)
        with session.no_autoflush:
            assert validation_scores(session, fid, "ndcg@10") == {0: 0.2 * 3 / 3}
        assert session.new  # not flushed by the read
        session.rollback()
    with ctx.sessions.begin() as session:
        pending(session)
        assert validation_scores(session, fid, "ndcg@10") == {0: (0.2 * 3 + 0.6) / 4}
        assert not session.new
        # the rows as the session's own query reads them, converted alike (JSON, ints)
        rows = EvaluationRepository(session).validation_figures(fid)
        assert rows == [
            tuple(row)
            for row in session.execute(
                select(Evaluation.version, Evaluation.metrics, Evaluation.num_users)
                .where(Evaluation.federation_id == fid, Evaluation.split == "validation")
                .order_by(Evaluation.version, Evaluation.participant_id)
            )
        ]
        assert sorted(row[1]["ndcg@10"] for row in rows) == [0.2, 0.6]
        assert sorted(row[2] for row in rows) == [1, 3]
