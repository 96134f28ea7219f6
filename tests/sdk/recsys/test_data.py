"""Loaders and cleaning: auto-detection, malformed rows, duplicates, k-core, catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from participant_sdk.recsys import (
    CleaningReport,
    DataFileError,
    k_core,
    load_csv,
    load_movielens_100k,
    load_movielens_ratings_csv,
    map_to_catalog,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestLoadCsv:
    def test_auto_detects_columns_and_delimiter(self, tmp_path: Path) -> None:
        path = _write(
            tmp_path,
            "x.tsv",
            "ts\tscore\tproduct_id\tcustomer\tuid\n5\t4.0\tB\tzz\t2\n6\t3.0\tA\tzz\t1\n",
        )
        inter, report = load_csv(path)
        assert report.rows_read == 2
        assert report.malformed == 0
        assert inter.user_ids == ["1", "2"]
        assert inter.item_ids == ["A", "B"]
        assert inter.timestamps.tolist() == [5.0, 6.0]
        assert inter.ratings.tolist() == [4.0, 3.0]

    def test_explicit_columns(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "x.csv", "who;what;when\n1;7;2020-01-01T00:00:00\n")
        inter, _ = load_csv(path, user_col="who", item_col="what", time_col="when")
        assert len(inter) == 1
        assert inter.timestamps[0] == pytest.approx(1577836800.0, abs=86400)

    def test_reads_movielens_1m_double_colon_delimiter(self, tmp_path: Path) -> None:
        path = _write(
            tmp_path,
            "ratings.dat",
            "user::item::rating::timestamp\n1::1193::5::978300760\n2::661::3::978302109\n",
        )
        inter, report = load_csv(path)
        assert report.rows_read == 2
        assert sorted(inter.item_ids) == ["1193", "661"]
        assert sorted(inter.ratings.tolist()) == [3.0, 5.0]
        assert sorted(inter.timestamps.tolist()) == [978300760.0, 978302109.0]

    def test_explicit_multi_character_delimiter(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "x.txt", "u||i\na:b||c,d\n")
        inter, _ = load_csv(path, user_col="u", item_col="i", delimiter="||")
        assert inter.user_ids == ["a:b"]
        assert inter.item_ids == ["c,d"]

    def test_headerless_file_is_refused_with_the_fix(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
        with pytest.raises(DataFileError, match="is data, not a header: add a header row"):
            load_csv(path)

    def test_malformed_rows_are_counted_by_reason(self, tmp_path: Path) -> None:
        path = _write(
            tmp_path,
            "x.csv",
            "user_id,item_id,rating,timestamp\n"
            "1,10,5,100\n"
            ",10,5,100\n"  # missing user
            "2,,5,100\n"  # missing item
            "3,10,abc,100\n"  # bad rating
            "4,10,5,yesterday\n"  # bad timestamp
            "5,10\n"  # too short
            "\n"  # blank: ignored, not counted
            "6,11,1,100\n",
        )
        inter, report = load_csv(path, min_rating=2)
        assert len(inter) == 1
        assert report.rows_read == 7
        assert report.dropped == {
            "missing_user": 1,
            "missing_item": 1,
            "bad_rating": 1,
            "bad_timestamp": 1,
            "too_few_columns": 1,
        }
        assert report.below_threshold == 1

    def test_duplicates_keep_most_recent(self, tmp_path: Path) -> None:
        path = _write(
            tmp_path,
            "x.csv",
            "userId,movieId,rating,timestamp\n1,5,2,300\n1,5,4,100\n1,6,4,50\n1,5,3,200\n",
        )
        inter, report = load_movielens_ratings_csv(path)
        assert report.duplicates_collapsed == 2
        assert len(inter) == 2
        kept = inter.items == inter.item_ids.index("5")
        assert inter.timestamps[kept].tolist() == [300.0]
        assert inter.ratings[kept].tolist() == [2.0]

    def test_missing_columns_is_an_error(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "x.csv", "a,b\n1,2\n")
        with pytest.raises(ValueError, match="user and item"):
            load_csv(path)


class TestMovieLens:
    def test_u_data_format(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "u.data", "196\t242\t3\t881250949\n22\t377\t1\t878887116\n")
        inter, report = load_movielens_100k(tmp_path)
        assert report.rows_read == 2
        assert inter.user_ids == ["22", "196"]
        assert len(inter) == 2
        assert path.exists()


class TestKCore:
    def test_iterates_until_stable(self) -> None:
        from participant_sdk.recsys import from_arrays

        # item c has 1 user -> removed; user 3 is then left with 1 item -> removed;
        # what stays is the 2x2 block users {1, 2} x items {a, b}.
        users = ["1", "1", "2", "2", "3", "3"]
        items = ["a", "b", "a", "b", "b", "c"]
        report = CleaningReport()
        out = k_core(from_arrays(users, items), 2, report=report)
        assert sorted(zip(out.users.tolist(), out.items.tolist(), strict=True)) == [
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
        ]
        assert report.k_core_removed == 2


class TestCatalog:
    def test_unknown_items_reported(self) -> None:
        from participant_sdk.recsys import from_arrays

        inter = from_arrays(["1", "1", "2", "2"], ["x", "y", "z", "x"])
        mapping = map_to_catalog(inter, ["y", "x", "w"])
        assert mapping.unknown_items == ["z"]
        assert mapping.unknown_interactions == 1
        got = mapping.interactions
        assert got.item_ids == ["y", "x", "w"]
        assert len(got) == 3
        assert sorted(got.items.tolist()) == [0, 1, 1]

    def test_duplicate_catalog_rejected(self) -> None:
        from participant_sdk.recsys import from_arrays

        with pytest.raises(ValueError, match="duplicate"):
            map_to_catalog(from_arrays(["1"], ["x"]), ["x", "x"])

    def test_numeric_catalog(self) -> None:
        from participant_sdk.recsys import from_arrays

        mapping = map_to_catalog(from_arrays(["1"], ["7"]), [3, 7])
        assert mapping.interactions.items.tolist() == [1]
        assert np.array_equal(mapping.interactions.users, [0])
