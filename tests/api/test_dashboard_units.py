"""The dashboard's pure parts: session cookies and CSRF tokens, chart geometry."""

from __future__ import annotations

import pytest

from coordinator.api.dashboard.charts import HEIGHT, PAD_B, PAD_L, PAD_T, line_chart, metric_charts
from coordinator.api.dashboard.sessions import SESSION_SECONDS, SessionSigner


class TestSessionSigner:
    def test_round_trip(self) -> None:
        signer = SessionSigner(b"secret")
        cookie, session = signer.issue("ab" * 32, now=1000.0)
        assert signer.verify(cookie, now=1001.0) == session
        assert session.expires_at == 1000 + SESSION_SECONDS

    def test_expired_cookie_is_refused(self) -> None:
        signer = SessionSigner(b"secret")
        cookie, _ = signer.issue("ab" * 32, now=1000.0)
        assert signer.verify(cookie, now=1000.0 + SESSION_SECONDS) is None

    @pytest.mark.parametrize("cookie", [None, "", "a.b.c", "no-dot", "eyJoIjoiYSJ9.sig"])
    def test_malformed_or_unsigned_cookie_is_refused(self, cookie: str | None) -> None:
        assert SessionSigner(b"secret").verify(cookie) is None

    def test_another_secret_does_not_verify(self) -> None:
        cookie, _ = SessionSigner(b"secret").issue("ab" * 32)
        assert SessionSigner(b"other").verify(cookie) is None

    def test_changed_payload_breaks_the_signature(self) -> None:
        signer = SessionSigner(b"secret")
        cookie, _ = signer.issue("ab" * 32)
        other, _ = signer.issue("cd" * 32)
        # someone else's payload with this cookie's signature
        assert signer.verify(other.split(".")[0] + "." + cookie.split(".")[1]) is None

    def test_csrf_token_is_per_session(self) -> None:
        signer = SessionSigner(b"secret")
        _, first = signer.issue("ab" * 32)
        _, second = signer.issue("ab" * 32)
        assert signer.csrf_ok(first, signer.csrf_token(first))
        assert not signer.csrf_ok(first, signer.csrf_token(second))
        assert not signer.csrf_ok(first, None)
        assert not signer.csrf_ok(first, "")


class TestCharts:
    def test_points_are_ordered_and_scaled(self) -> None:
        chart = line_chart("ndcg@10", [(2, 0.2), (0, 0.0), (1, 0.1)], deployed_version=1)
        assert [p.version for p in chart.points] == [0, 1, 2]
        xs = [p.x for p in chart.points]
        assert xs[0] == PAD_L
        assert xs[0] < xs[1] < xs[2] == chart.plot_right
        # 0 sits on the axis; a higher value is drawn higher (smaller y)
        assert chart.points[0].y == HEIGHT - PAD_B
        assert chart.points[2].y < chart.points[1].y < chart.points[0].y
        assert chart.points[2].y > PAD_T  # headroom above the best value
        assert chart.deployed is chart.points[1]
        assert len(chart.polyline.split()) == 3

    def test_single_point_and_flat_series_are_drawable(self) -> None:
        single = line_chart("hr@10", [(3, 0.5)], deployed_version=None)
        assert single.deployed is None
        assert PAD_L < single.points[0].x < single.plot_right
        flat = line_chart("hr@10", [(0, 0.0), (1, 0.0)], deployed_version=None)
        assert all(p.y == HEIGHT - PAD_B for p in flat.points)

    def test_one_chart_per_metric_on_the_split(self) -> None:
        rows = [
            (0, "validation", {"ndcg@10": 0.1, "hr@10": 0.3}),
            (1, "validation", {"ndcg@10": 0.2, "hr@10": 0.4}),
            (1, "test", {"ndcg@10": 0.9}),
        ]
        charts = metric_charts(rows, deployed_version=1)
        assert [c.metric for c in charts] == ["hr@10", "ndcg@10"]
        assert [p.value for p in charts[1].points] == [0.1, 0.2]  # the test split is not drawn
        assert charts[1].deployed is not None
        assert charts[1].deployed.version == 1
