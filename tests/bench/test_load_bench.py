"""bench.load in quick mode: a real coordinator, 50 participants, every call accounted."""

from __future__ import annotations

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
    assert len(result.stats.latencies["poll"]) == participants  # each one's first look
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
