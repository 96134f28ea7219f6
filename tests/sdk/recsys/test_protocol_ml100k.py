"""The EVALUATION.md protocol on MovieLens 100K: split files, hashes, popularity anchor.

Skipped when the dataset is absent (its licence forbids shipping it in the repo).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from participant_sdk.recsys import (
    PopularityModel,
    draw_sampled_negatives,
    evaluate_loo,
    evaluate_sampled,
    evaluate_split,
    leave_one_out,
    load_movielens_100k,
    split_80_20,
)
from participant_sdk.recsys.data import Interactions
from participant_sdk.recsys.splits import LeaveOneOutSplit

SHA256 = {
    "loo_valid.tsv": "1667df1c856c1e695af061aca0eba441eb3094efe3824f95ff9becd6b6394511",
    "loo_test.tsv": "583464c2dd430c592c8d259362f00b8b2b215fe767a0ebb4eed504d9380643ec",
    "loo_test_neg99.tsv": "5bfe5892570c4d177b5dba131ef7c7c149d1bfe7fe1b47d9addb4684610b0195",
    "split8020_test.tsv": "6084035e9c2adf47885ce963ba27343cf429f59edd906ef8503f47d4d3536e10",
}


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path) -> tuple[Interactions, LeaveOneOutSplit]:
    inter, report = load_movielens_100k(ml100k_dir)
    assert report.malformed == 0
    return inter, leave_one_out(inter)


def _protocol(ml100k_dir: Path, name: str) -> Path:
    path = ml100k_dir / "protocol" / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


def _raw(inter: Interactions, part: Interactions) -> list[tuple[int, int]]:
    return [
        (int(inter.user_ids[u]), int(inter.item_ids[i]))
        for u, i in zip(part.users.tolist(), part.items.tolist(), strict=True)
    ]


@pytest.mark.parametrize("name", sorted(SHA256))
def test_protocol_file_hashes(ml100k_dir: Path, name: str) -> None:
    path = _protocol(ml100k_dir, name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]


def test_sizes(ml100k: tuple[Interactions, LeaveOneOutSplit]) -> None:
    inter, split = ml100k
    assert (inter.num_users, inter.num_items, len(inter)) == (943, 1682, 100000)
    assert len(split.train) == 98114
    assert len(split.train_and_valid()) == 99057


@pytest.mark.parametrize(("name", "part"), [("loo_valid.tsv", "valid"), ("loo_test.tsv", "test")])
def test_leave_one_out_matches_protocol(
    ml100k_dir: Path, ml100k: tuple[Interactions, LeaveOneOutSplit], name: str, part: str
) -> None:
    inter, split = ml100k
    rows = np.loadtxt(_protocol(ml100k_dir, name), dtype=np.int64, ndmin=2)
    got: Interactions = getattr(split, part)
    assert _raw(inter, got) == [tuple(r) for r in rows[:, :2].tolist()]
    assert got.timestamps.astype(np.int64).tolist() == rows[:, 2].tolist()


def test_80_20_matches_protocol(
    ml100k_dir: Path, ml100k: tuple[Interactions, LeaveOneOutSplit]
) -> None:
    inter, _ = ml100k
    rows = np.loadtxt(_protocol(ml100k_dir, "split8020_test.tsv"), dtype=np.int64, ndmin=2)
    got = sorted(_raw(inter, split_80_20(inter).test))
    assert got == sorted(tuple(r) for r in rows.tolist())


def test_sampled_negatives_match_protocol(
    ml100k_dir: Path, ml100k: tuple[Interactions, LeaveOneOutSplit]
) -> None:
    inter, split = ml100k
    rows = np.loadtxt(_protocol(ml100k_dir, "loo_test_neg99.tsv"), dtype=np.int64, ndmin=2)
    negatives = draw_sampled_negatives(inter, split.test.users)
    index = {int(raw): k for k, raw in enumerate(inter.item_ids)}
    expected = np.vectorize(index.__getitem__)(rows[:, 1:])
    assert np.array_equal(negatives, expected)


def test_popularity_reproduces_anchor_row(ml100k: tuple[Interactions, LeaveOneOutSplit]) -> None:
    inter, split = ml100k
    trainval = split.train_and_valid()
    pop = PopularityModel(trainval)
    m = evaluate_loo(pop.score, trainval, split.test)
    m.update(
        evaluate_sampled(pop.score, split.test, draw_sampled_negatives(inter, split.test.users))
    )
    random_split = split_80_20(inter)
    pop8020 = PopularityModel(random_split.train)
    m8020 = evaluate_split(pop8020.score, random_split.train, random_split.test)
    got = {
        "hr": m["hr@10"],
        "ndcg": m["ndcg@10"],
        "p": m["precision@10"],
        "r": m["recall@10"],
        "s_hr": m["sampled_hr@10"],
        "s_ndcg": m["sampled_ndcg@10"],
        "p8020": m8020["precision@10"],
        "r8020": m8020["recall@10"],
        "ndcg8020": m8020["ndcg@10"],
    }
    anchor = {
        "hr": 0.0498,
        "ndcg": 0.0253,
        "p": 0.0050,
        "r": 0.0498,
        "s_hr": 0.3075,
        "s_ndcg": 0.1634,
        "p8020": 0.1899,
        "r8020": 0.1164,
        "ndcg8020": 0.2147,
    }
    assert {k: round(v, 4) for k, v in got.items()} == anchor
