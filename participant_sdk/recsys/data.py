"""Interaction data: a compact container, file loaders, cleaning and catalog mapping.

Everything downstream (splits, training, metrics) works on contiguous 0-based integer
indices. The :class:`Interactions` container keeps the maps back to the external ids,
so a participant can translate its own ids onto the federation's item catalog.

Loaders never raise on a bad row: malformed rows are counted per reason in a
:class:`CleaningReport`, because a partner's export is rarely perfectly clean and a
silent drop would hide data problems.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "CatalogMapping",
    "CleaningReport",
    "DataFileError",
    "Interactions",
    "from_arrays",
    "k_core",
    "load_csv",
    "load_movielens_100k",
    "load_movielens_ratings_csv",
    "map_to_catalog",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Column spellings tried, in order, when the caller does not name the columns.
# Shop exports name them after the business (customer, sku), so those are tried too.
USER_COLUMNS = (
    "user",
    "user_id",
    "userid",
    "uid",
    "customer",
    "customer_id",
    "customerid",
    "client_id",
    "visitor",
    "visitor_id",
    "member_id",
    "account_id",
)
ITEM_COLUMNS = (
    "item",
    "item_id",
    "itemid",
    "movieid",
    "movie_id",
    "product",
    "product_id",
    "productid",
    "sku",
    "sku_id",
    "article_id",
    "iid",
)
# The rating column doubles as the interaction strength (Interactions.strengths), so
# count-like spellings are detected too, after the rating ones.
RATING_COLUMNS = (
    "rating",
    "score",
    "value",
    "weight",
    "strength",
    "count",
    "counts",
    "quantity",
    "qty",
    "plays",
    "playcount",
    "play_count",
    "clicks",
)
TIMESTAMP_COLUMNS = ("timestamp", "time", "ts", "date", "datetime")


class DataFileError(ValueError):
    """A local interaction file that cannot be used, with where and how to fix it.

    Attributes
    ----------
    path:
        The file (``None`` when the problem is the data, wherever it came from).
    line:
        The 1-based line at fault, when one is (a byte that does not decode).
    """

    def __init__(
        self, message: str, *, path: str | Path | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.line = line


@dataclass
class CleaningReport:
    """What a loader or cleaning step kept and dropped, and why.

    Attributes
    ----------
    rows_read:
        Data rows seen (header excluded).
    dropped:
        Count of dropped rows per reason, e.g. ``{"missing_user": 2}``.
    duplicates_collapsed:
        Rows removed because the (user, item) pair occurred again (the most recent
        timestamp is kept).
    below_threshold:
        Rows removed by the rating threshold.
    k_core_removed:
        Interactions removed by the k-core filter.
    """

    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates_collapsed: int = 0
    below_threshold: int = 0
    k_core_removed: int = 0

    @property
    def malformed(self) -> int:
        """Total rows dropped as malformed (sum of :attr:`dropped`)."""
        return sum(self.dropped.values())

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def summary(self) -> str:
        """One line for a log: rows read, dropped per reason, duplicates collapsed."""
        parts = [f"{self.rows_read} rows read"]
        if self.dropped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))
            parts.append(f"{self.malformed} malformed dropped ({reasons})")
        if self.duplicates_collapsed:
            parts.append(f"{self.duplicates_collapsed} duplicate (user, item) rows collapsed")
        if self.below_threshold:
            parts.append(f"{self.below_threshold} below the rating threshold")
        if self.k_core_removed:
            parts.append(f"{self.k_core_removed} removed by the k-core filter")
        return "; ".join(parts)


@dataclass
class Interactions:
    """Implicit interactions as parallel index arrays plus external-id maps.

    Attributes
    ----------
    users, items:
        int64 arrays of 0-based indices into :attr:`user_ids` / :attr:`item_ids`.
    timestamps:
        float64 array (seconds, or any monotone key); NaN when unknown.
    ratings:
        float64 array of the raw rating / weight / count (NaN when the source had none).
        The evaluation protocol ignores it; it is kept for thresholding and is the
        interaction strength (:attr:`strengths`).
    user_ids, item_ids:
        External ids, as strings; index ``k`` maps to ``user_ids[k]``. Loaders sort
        them ascending numerically when every id is an integer (protocol step 4),
        lexicographically otherwise.
    """

    users: IntArray
    items: IntArray
    timestamps: FloatArray
    ratings: FloatArray
    user_ids: list[str]
    item_ids: list[str]

    @property
    def num_users(self) -> int:
        """Number of users in the id map (some may have no interaction left)."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of items in the id map (the item universe)."""
        return len(self.item_ids)

    @property
    def strengths(self) -> FloatArray:
        """Per-interaction strength: the rating / count where known, else 1.

        Only a confidence-weighted model (implicit ALS) uses it, to weigh training;
        splits and metrics treat every interaction as one positive regardless.
        """
        return np.where(np.isfinite(self.ratings), self.ratings, 1.0)

    def __len__(self) -> int:
        return int(self.users.size)

    def subset(self, mask: npt.NDArray[np.bool_]) -> Interactions:
        """Return the interactions selected by a boolean mask, keeping the id maps."""
        return Interactions(
            users=self.users[mask],
            items=self.items[mask],
            timestamps=self.timestamps[mask],
            ratings=self.ratings[mask],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
        )

    def user_index(self) -> dict[str, int]:
        """Map external user id to index."""
        return {uid: k for k, uid in enumerate(self.user_ids)}

    def item_index(self) -> dict[str, int]:
        """Map external item id to index."""
        return {iid: k for k, iid in enumerate(self.item_ids)}


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    unique = set(ids)
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


def from_arrays(
    users: Sequence[str] | npt.NDArray[np.generic],
    items: Sequence[str] | npt.NDArray[np.generic],
    timestamps: Sequence[float] | npt.NDArray[np.generic] | None = None,
    ratings: Sequence[float] | npt.NDArray[np.generic] | None = None,
    *,
    report: CleaningReport | None = None,
) -> Interactions:
    """Build :class:`Interactions` from external ids, collapsing duplicate pairs.

    Users and items are indexed in ascending order of their external ids (numeric
    order when all ids are integers), as the evaluation protocol requires. Duplicate
    (user, item) pairs keep the row with the most recent timestamp.

    Parameters
    ----------
    users, items:
        External ids (anything ``str()``-able), one per interaction.
    timestamps, ratings:
        Optional per-interaction values; NaN when absent.
    report:
        Receives the number of collapsed duplicates.
    """
    user_str = [str(u) for u in users]
    item_str = [str(i) for i in items]
    n = len(user_str)
    if len(item_str) != n:
        raise ValueError("users and items must have the same length")
    ts = np.full(n, np.nan) if timestamps is None else np.asarray(timestamps, dtype=np.float64)
    rt = np.full(n, np.nan) if ratings is None else np.asarray(ratings, dtype=np.float64)
    user_ids = _sorted_ids(user_str)
    item_ids = _sorted_ids(item_str)
    uidx = {u: k for k, u in enumerate(user_ids)}
    iidx = {i: k for k, i in enumerate(item_ids)}
    u = np.fromiter((uidx[x] for x in user_str), dtype=np.int64, count=n)
    i = np.fromiter((iidx[x] for x in item_str), dtype=np.int64, count=n)
    inter = Interactions(u, i, ts, rt, user_ids, item_ids)
    return _dedupe(inter, report)


def _dedupe(inter: Interactions, report: CleaningReport | None) -> Interactions:
    n = len(inter)
    if n == 0:
        return inter
    # NaN timestamps sort as oldest so any dated row wins; among equal keys the later row wins.
    ts_key = np.where(np.isnan(inter.timestamps), -np.inf, inter.timestamps)
    order = np.lexsort((np.arange(n), ts_key, inter.items, inter.users))
    u, i = inter.users[order], inter.items[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    keep = np.sort(order[last])
    if report is not None:
        report.duplicates_collapsed += n - int(keep.size)
    mask = np.zeros(n, dtype=bool)
    mask[keep] = True
    return inter.subset(mask)


def _parse_timestamp(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        text = raw.strip().replace("Z", "+00:00")
        return datetime.fromisoformat(text).timestamp()
    if not math.isfinite(value):
        raise ValueError("timestamp is not finite")
    return value


# MovieLens 1M/10M's ``ratings.dat`` separator, recognised on the first line.
MULTI_CHAR_DELIMITER = "::"
_UNIT_SEPARATOR = "\x1f"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _pick_column(header: Sequence[str], given: str | None, candidates: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    if given is not None:
        if given.lower() not in lowered:
            raise ValueError(f"column {given!r} is not in the header {list(header)}")
        return lowered.index(given.lower())
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    return None


def load_csv(
    path: str | Path,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
    delimiter: str | None = None,
    min_rating: float | None = None,
    encoding: str = "utf-8-sig",
    timestamp_col: str | None = None,
) -> tuple[Interactions, CleaningReport]:
    """Load a delimited file with a header row into :class:`Interactions`.

    Columns not named by argument are auto-detected among common spellings
    (``user``/``user_id``/``userId``/``uid``/``customer``/``customer_id``/``visitor_id``;
    ``item``/``item_id``/``itemId``/``movieId``/``product``/``product_id``/``sku``;
    ``rating``/``score``/``value``/``weight``, then the
    strength spellings ``strength``/``count``/``quantity``/``qty``/``plays``/
    ``playcount``/``clicks``;
    ``timestamp``/``time``/``ts``/``date``), case-insensitively. The delimiter is
    sniffed among comma, tab, semicolon and pipe (and ``::`` on the first line, as
    MovieLens 1M/10M write it) unless given.

    Rows are dropped (and counted in the report) when the user or item is empty,
    the row is too short, the rating or timestamp does not parse, or the rating is
    below ``min_rating``. Duplicate (user, item) pairs keep the most recent timestamp.

    ``encoding`` is the file's text encoding (UTF-8, with or without a BOM, by default;
    e.g. ``"latin-1"`` or ``"cp1252"`` for older exports). ``timestamp_col`` is the
    deprecated name of ``time_col``.

    Raises
    ------
    DataFileError
        The file does not decode in ``encoding`` (the message names the line), has no
        header, or has no usable interaction row.

    Returns
    -------
    (interactions, report)
    """
    if timestamp_col is not None:
        warnings.warn(
            "load_csv(timestamp_col=) is deprecated; use time_col=",
            DeprecationWarning,
            stacklevel=2,
        )
        if time_col is not None and time_col != timestamp_col:
            raise ValueError("pass time_col or timestamp_col (deprecated), not both")
        time_col = timestamp_col
    text = _read_text(Path(path), encoding)
    try:
        inter, report = _load_text(
            text,
            user_col=user_col,
            item_col=item_col,
            rating_col=rating_col,
            timestamp_col=time_col,
            delimiter=delimiter,
            min_rating=min_rating,
        )
    except DataFileError:
        raise
    except ValueError as exc:
        raise DataFileError(f"{path}: {exc}", path=path) from None
    _require_rows(path, inter, report)
    return inter, report


def _read_text(path: Path, encoding: str) -> str:
    """The file's text; a byte that does not decode is reported with its line."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise DataFileError(
            f"{path}: line {line} is not valid {encoding} (byte 0x{byte}); pass the "
            "file's encoding, e.g. encoding='latin-1' or encoding='cp1252'",
            path=path,
            line=line,
        ) from None


def _require_rows(path: str | Path, inter: Interactions, report: CleaningReport) -> None:
    """An empty result is a broken export, not a participant with nothing to train."""
    if len(inter):
        return
    if report.rows_read == 0:
        raise DataFileError(f"{path}: no interaction rows (a header alone, or empty)", path=path)
    raise DataFileError(f"{path}: no usable interaction row ({report.summary()})", path=path)


def _load_text(
    text: str,
    *,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
    delimiter: str | None,
    min_rating: float | None,
) -> tuple[Interactions, CleaningReport]:
    if delimiter is None:
        sample = text[:65536]
        first_line = sample.split("\n", 1)[0]
        if MULTI_CHAR_DELIMITER in first_line:
            delimiter = MULTI_CHAR_DELIMITER
        else:
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
            except csv.Error:
                delimiter = ","
    if len(delimiter) > 1:
        # The csv module splits on one character: MovieLens 1M/10M's "::" becomes the
        # ASCII unit separator, which no text export uses inside a field.
        if _UNIT_SEPARATOR in text:
            raise ValueError(f"the delimiter {delimiter!r} cannot be read in a file holding \\x1f")
        text = text.replace(delimiter, _UNIT_SEPARATOR)
        delimiter = _UNIT_SEPARATOR
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError("the file is empty (no header row)") from None
    if not header or all(not cell.strip() for cell in header):
        raise ValueError("the first line is blank; it must be the header row")
    if all(_is_number(cell) for cell in header):
        raise ValueError(
            f"the first line {header} is data, not a header: add a header row naming the "
            "columns (e.g. user,item,rating,timestamp)"
        )
    u_col = _pick_column(header, user_col, USER_COLUMNS)
    i_col = _pick_column(header, item_col, ITEM_COLUMNS)
    if u_col is None or i_col is None:
        raise ValueError(
            f"cannot find the user and item columns in header {header}; pass user_col/item_col"
        )
    r_col = _pick_column(header, rating_col, RATING_COLUMNS)
    t_col = _pick_column(header, timestamp_col, TIMESTAMP_COLUMNS)
    return _rows_to_interactions(reader, u_col, i_col, r_col, t_col, min_rating)


def _rows_to_interactions(
    rows: Iterable[Sequence[str]],
    u_col: int,
    i_col: int,
    r_col: int | None,
    t_col: int | None,
    min_rating: float | None,
) -> tuple[Interactions, CleaningReport]:
    report = CleaningReport()
    width = max(c for c in (u_col, i_col, r_col, t_col) if c is not None) + 1
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[float] = []
    for row in rows:
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines are layout, not data
        report.rows_read += 1
        if len(row) < width:
            report._drop("too_few_columns")
            continue
        user, item = row[u_col].strip(), row[i_col].strip()
        if not user:
            report._drop("missing_user")
            continue
        if not item:
            report._drop("missing_item")
            continue
        rating = math.nan
        if r_col is not None:
            try:
                rating = float(row[r_col])
            except ValueError:
                report._drop("bad_rating")
                continue
            if not math.isfinite(rating):
                report._drop("bad_rating")
                continue
        stamp = math.nan
        if t_col is not None:
            try:
                stamp = _parse_timestamp(row[t_col])
            except (ValueError, OverflowError):
                report._drop("bad_timestamp")
                continue
        if min_rating is not None and not (rating >= min_rating):
            report.below_threshold += 1
            continue
        users.append(user)
        items.append(item)
        ratings.append(rating)
        stamps.append(stamp)
    inter = from_arrays(users, items, stamps, ratings, report=report)
    return inter, report


def load_movielens_100k(
    path: str | Path, *, min_rating: float | None = None
) -> tuple[Interactions, CleaningReport]:
    """Load MovieLens 100K ``u.data`` (tab-separated ``user item rating timestamp``).

    ``path`` may be the ``u.data`` file or the directory holding it.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "u.data"
    text = p.read_text(encoding="latin-1")
    rows = (line.split("\t") for line in text.splitlines())
    inter, report = _rows_to_interactions(rows, 0, 1, 2, 3, min_rating)
    _require_rows(p, inter, report)
    return inter, report


def load_movielens_ratings_csv(
    path: str | Path, *, min_rating: float | None = None
) -> tuple[Interactions, CleaningReport]:
    """Load a MovieLens ``ratings.csv`` (header ``userId,movieId,rating,timestamp``)."""
    return load_csv(
        path,
        user_col="userId",
        item_col="movieId",
        rating_col="rating",
        time_col="timestamp",
        delimiter=",",
        min_rating=min_rating,
    )


def k_core(inter: Interactions, k: int, *, report: CleaningReport | None = None) -> Interactions:
    """Keep interactions whose user and item both have at least ``k`` interactions.

    Iterates until stable (removing an item can push a user below ``k``). Id maps are
    kept unchanged so indices stay comparable with the unfiltered data.
    """
    mask = np.ones(len(inter), dtype=bool)
    while True:
        u_counts = np.bincount(inter.users[mask], minlength=inter.num_users)
        i_counts = np.bincount(inter.items[mask], minlength=inter.num_items)
        ok = mask & (u_counts[inter.users] >= k) & (i_counts[inter.items] >= k)
        if int(ok.sum()) == int(mask.sum()):
            break
        mask = ok
    if report is not None:
        report.k_core_removed += len(inter) - int(mask.sum())
    return inter.subset(mask)


@dataclass
class CatalogMapping:
    """Result of mapping a participant's items onto the federation's item catalog.

    Attributes
    ----------
    interactions:
        The interactions whose item is in the catalog; item index ``k`` now means
        catalog row ``k`` (``item_ids`` is the catalog).
    unknown_items:
        External item ids the catalog lacks, sorted.
    unknown_interactions:
        Number of interactions left out because their item is unknown.
    """

    interactions: Interactions
    unknown_items: list[str]
    unknown_interactions: int


def map_to_catalog(inter: Interactions, catalog: Sequence[str | int]) -> CatalogMapping:
    """Re-index items onto a federation's catalog (row ``i`` is ``catalog[i]``).

    Interactions with items outside the catalog cannot be trained on; they are
    removed from the result but reported (ids and count), never dropped silently.
    """
    cat = [str(c) for c in catalog]
    pos = {c: k for k, c in enumerate(cat)}
    if len(pos) != len(cat):
        dupes = sorted(c for c, n in Counter(cat).items() if n > 1)
        raise ValueError(f"catalog has duplicate ids: {dupes[:5]}")
    lookup = np.array([pos.get(iid, -1) for iid in inter.item_ids], dtype=np.int64)
    new_items = lookup[inter.items] if len(inter) else np.zeros(0, dtype=np.int64)
    known = new_items >= 0
    unknown_idx = np.unique(inter.items[~known])
    mapped = Interactions(
        users=inter.users[known],
        items=new_items[known],
        timestamps=inter.timestamps[known],
        ratings=inter.ratings[known],
        user_ids=inter.user_ids,
        item_ids=cat,
    )
    return CatalogMapping(
        interactions=mapped,
        unknown_items=_sorted_ids(inter.item_ids[k] for k in unknown_idx),
        unknown_interactions=int((~known).sum()),
    )
