"""A partner's export as it really arrives: header-only, shop column names, another
encoding, the deprecated ``timestamp_col`` spelling (issue 13's partner-path traps)."""

from __future__ import annotations

from pathlib import Path

import pytest

from participant_sdk.recsys import DataFileError, load_csv, load_movielens_100k


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_header_without_rows_is_an_error_at_load(tmp_path: Path) -> None:
    path = _write(tmp_path, "export.csv", b"user,item,timestamp\n")
    with pytest.raises(DataFileError, match="no interaction rows") as caught:
        load_csv(path)
    assert caught.value.path == path
    assert str(path) in str(caught.value)


def test_only_malformed_rows_is_an_error_that_says_why(tmp_path: Path) -> None:
    path = _write(tmp_path, "export.csv", b"user,item,rating\n1,,4\n2,7,high\n")
    with pytest.raises(DataFileError, match="no usable interaction row") as caught:
        load_csv(path)
    assert "1 missing_item" in str(caught.value)
    assert "1 bad_rating" in str(caught.value)


def test_an_empty_u_data_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.data", b"")
    with pytest.raises(DataFileError, match="no interaction rows"):
        load_movielens_100k(path)


def test_shop_column_names_are_detected(tmp_path: Path) -> None:
    path = _write(tmp_path, "orders.csv", b"customer,sku,ts\nc1,SKU-9,10\nc2,SKU-3,11\n")
    inter, report = load_csv(path)
    assert report.malformed == 0
    assert inter.user_ids == ["c1", "c2"]
    assert inter.item_ids == ["SKU-3", "SKU-9"]
    assert sorted(inter.timestamps.tolist()) == [10.0, 11.0]


def test_non_utf8_names_file_line_and_the_encoding_option(tmp_path: Path) -> None:
    # line 3 holds a Latin-1 "é" (0xe9), which is not UTF-8
    data = b"user,item\nu1,caf\xc3\xa9\nu2,caf\xe9\n"
    path = _write(tmp_path, "latin.csv", data)
    with pytest.raises(DataFileError) as caught:
        load_csv(path)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert "encoding=" in message
    assert caught.value.line == 3
    inter, _ = load_csv(path, encoding="latin-1")
    assert len(inter) == 2
    assert "cafÃ©" in inter.item_ids  # the UTF-8 line read as Latin-1, as asked


def test_timestamp_col_is_a_deprecated_alias_of_time_col(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", b"who,what,when\n1,7,5\n1,8,9\n")
    expected, _ = load_csv(path, user_col="who", item_col="what", time_col="when")
    with pytest.warns(DeprecationWarning, match="time_col"):
        aliased, _ = load_csv(path, user_col="who", item_col="what", timestamp_col="when")
    assert aliased.timestamps.tolist() == expected.timestamps.tolist() == [5.0, 9.0]
    with (
        pytest.raises(ValueError, match="not both"),
        pytest.warns(DeprecationWarning, match="time_col"),
    ):
        load_csv(path, user_col="who", item_col="what", time_col="who", timestamp_col="when")
