"""bench.load in quick mode: a real coordinator, 50 participants, every call accounted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from bench import load


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_quick_load_runs_every_round_without_errors(workers: int) -> None:
    args = load.parse_args(
        ["--participants", "50", "--rounds", "2", "--workers", str(workers), "--time-limit", "240"]
    )
    result = load.run(args)
    assert result.stats.errors == []
    assert result.stats.uploads == 50 * 2
    latencies = result.stats.latencies
    assert len(latencies["poll"]) == 50  # each participant's first look
    assert len(latencies["download"]) == 50 * 2
    assert len(latencies["upload"]) == 50 * 2
    assert len(latencies["long-poll"]) >= 50  # at least one wait per participant for round 2
    assert result.usage.processes >= workers  # the coordinator's own process(es) were sampled
    assert result.usage.cpu_seconds > 0
    assert result.usage.peak_rss_bytes > 0

    table = load.report(result)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[1:5]] == list(load.KINDS)
    assert rows[6].split("|")[-2].strip() == "0"  # the errors column


def test_refuses_impossible_arguments() -> None:
    with pytest.raises(SystemExit):
        load.parse_args(["--rows", "5000", "--items", "100"])


def test_raises_the_soft_open_file_limit_within_the_hard_one() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert load.raise_file_limit(soft) == soft  # never lowered
    raised = load.raise_file_limit(soft + 1)
    assert raised == (soft + 1 if hard == resource.RLIM_INFINITY or soft < hard else soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_quick_sampled_load_sits_out_rounds_without_requests() -> None:
    participants, sample, rounds = 60, 10, 4
    args = load.parse_args(
        [
            *("--participants", str(participants), "--sample", str(sample)),
            *("--rounds", str(rounds), "--time-limit", "240"),
        ]
    )
    result = load.run(args)
    assert result.stats.errors == []
    assert result.sample == sample
    assert result.stats.uploads == sample * rounds  # only the drawn participants upload
    assert result.stats.sat_out > 0
    # a participant's long-poll returns only for a round it was drawn into or at the end,
    # not once per round as a plain `after` poll does (participants x (rounds - 1))
    assert len(result.stats.latencies["long-poll"]) < participants * (rounds - 1)
    assert result.usage.later_rounds_cpu_seconds is not None
    # each first request waited (in_cohort) instead of a look followed by a wait
    assert result.stats.latencies["poll"] == []


def test_refuses_a_non_positive_first_poll_rate() -> None:
    with pytest.raises(SystemExit):
        load.parse_args(["--first-polls-per-second", "0"])
    assert load.parse_args(["--first-polls-per-second", "25"]).first_polls_per_second == 25.0
    assert load.parse_args([]).first_polls_per_second is None  # all at once by default
    with pytest.raises(SystemExit):
        load.parse_args(["--bench-processes", "0"])


@pytest.mark.slow
def test_staggered_sampled_load_completes_every_round() -> None:
    """Participants that come online one after another, driven from two processes, still
    make every round, and both processes' figures are merged."""
    participants, sample, rounds = 40, 5, 3
    args = load.parse_args(
        [
            *("--participants", str(participants), "--sample", str(sample)),
            *("--rounds", str(rounds), "--first-polls-per-second", "20"),
            *("--time-limit", "240", "--bench-processes", "2"),
        ]
    )
    result = load.run(args)
    assert result.stats.errors == []
    assert result.stats.uploads == sample * rounds
    # a sampled participant's first request is already its wait (after=0, in_cohort)
    assert result.stats.latencies["poll"] == []
    assert len(result.stats.latencies["long-poll"]) >= participants
    assert result.first_polls_per_second == 20.0
    assert result.enrol_seconds > 0
    assert result.bench_processes == 2
    assert result.stats.cpu_seconds > 0  # the participants' own processes reported theirs
    assert result.stats.sat_out > 0  # both processes' participants are counted
    assert "first polls 20/s, 2 bench process(es)" in load.report(result)


def test_stats_from_several_processes_add_up() -> None:
    first, second = load.Stats(), load.Stats()
    first.latencies["poll"].extend([0.1, 0.2])
    second.latencies["poll"].append(0.3)
    first.backpressure["upload"] += 1
    second.backpressure["upload"] += 2
    second.errors.append("upload: 500")
    first.uploads, second.uploads = 3, 4
    first.sat_out, second.sat_out = 5, 6
    first.cpu_seconds, second.cpu_seconds = 1.5, 2.0
    first.merge(second)
    assert first.latencies["poll"] == [0.1, 0.2, 0.3]
    assert first.backpressure["upload"] == 3
    assert first.errors == ["upload: 500"]
    assert (first.uploads, first.sat_out, first.cpu_seconds) == (7, 11, 3.5)


def test_unreachable_connects_add_up_too() -> None:
    first, second = load.Stats(), load.Stats()
    first.unreachable["poll"] += 2
    second.unreachable["poll"] += 3
    first.reasked["long-poll"] += 1
    second.reasked["long-poll"] += 4
    first.merge(second)
    assert first.unreachable["poll"] == 5
    assert first.reasked["long-poll"] == 5


async def test_a_long_poll_without_an_answer_is_asked_again_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long-poll answered after its read timeout, then one whose connection dropped,
    then the answer: the participant keeps waiting (as the SDK does), nothing is an
    error; any other call that times out still is."""
    answers: Iterator[httpx.Response | Exception] = iter(
        [
            httpx.ReadTimeout("answered late"),
            httpx.RemoteProtocolError("Server disconnected"),
            httpx.Response(200, json={"number": 2}),
        ]
    )

    def handler(_request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def no_sleep(_seconds: float) -> None:
        pass

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    stats = load.Stats()
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://coordinator"
    ) as client:
        response = await load._call(client, stats, "long-poll", "GET", "/v1/x")
        assert response.json() == {"number": 2}
        assert stats.reasked["long-poll"] == 2
        assert stats.errors == []
        answers = iter([httpx.ReadTimeout("slow download")])
        with pytest.raises(load._Failed):
            await load._call(client, stats, "download", "GET", "/v1/x")
    assert stats.errors == ["download: ReadTimeout: slow download"]


async def test_back_pressure_is_waited_out_and_counted_apart_from_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 503 overloaded with Retry-After, then a refused connect, then the answer: one
    latency, one back-pressure, one connect retried, no error; waits jittered upwards."""
    answers: Iterator[httpx.Response | Exception] = iter(
        [
            httpx.Response(503, headers={"Retry-After": "4"}, json={"type": "overloaded"}),
            httpx.ConnectTimeout("accept queue full"),
            httpx.Response(200, json={"number": 1}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/x"
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    stats = load.Stats()
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://coordinator"
    ) as client:
        response = await load._call(client, stats, "poll", "GET", "/v1/x")
    assert response.status_code == 200
    assert stats.errors == []
    assert stats.backpressure["poll"] == 1
    assert stats.unreachable["poll"] == 1
    assert len(stats.latencies["poll"]) == 1
    assert 4.0 <= slept[0] <= 4.0 * (1 + load.RETRY_JITTER)
    assert 0.5 * load.CONNECT_BACKOFF_SECONDS <= slept[1] <= 1.5 * load.CONNECT_BACKOFF_SECONDS


def test_the_report_counts_back_pressure_beside_errors() -> None:
    stats = load.Stats()
    stats.backpressure.update({"poll": 3, "admin": 1})
    result = load.Result(
        participants=10,
        rounds=1,
        workers=1,
        backend="SQLite",
        wall_seconds=1.0,
        stats=stats,
        usage=load.Usage(),
        bench_cpu_seconds=0.0,
    )
    table = load.report(result)
    assert "4 in all, 1 of them the bench's own admin reads" in table
    summary = next(line for line in table.splitlines() if line.startswith("| 10 "))
    assert summary.split("|")[-3].strip() == "4"  # back-pressure, apart from...
    assert summary.split("|")[-2].strip() == "0"  # ...the errors


async def test_later_rounds_start_after_every_participant_started() -> None:
    """A round that closed while participants were still joining (their first requests
    are a once-per-participant cost) is not a later round."""
    import os

    sampler = load._Sampler(os.getpid(), joined_after=10.0)
    sampler._closes = {1: (1.0, 5.0), 2: (2.0, 12.0), 3: (3.5, 20.0)}  # version: (CPU, s)
    usage = await sampler.stop()
    assert usage.later_rounds == 1
    assert usage.later_rounds_cpu_seconds == 1.5
    assert usage.later_rounds_wall_seconds == 8.0
