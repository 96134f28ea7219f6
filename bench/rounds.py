"""Round benchmark against a real ``fedrec serve`` process on 127.0.0.1.

For every backend (SQLite, PostgreSQL), model size (float32 parameters of an ``mf``
model) and number of participants K, a fresh coordinator process is started on a fresh
database and data directory; K participants are enrolled and, round after round, upload
dense updates through a fixed-size pool of upload threads (the same concurrency for
every K, so memory differences come from K, not from concurrency). A round closes when
all K have uploaded; the coordinator aggregates it in the background.

Printed per cell (nothing is asserted):

* round wall time: first upload sent -> next round open (median over the rounds),
* upload throughput: bytes uploaded / upload phase time, in MB/s,
* aggregation time: last receipt -> next round open (median),
* coordinator RSS: after start, peak while uploading, peak while aggregating (psutil,
  sampled every 20 ms) and the kernel's high-water mark (``VmHWM``) for the process.

The point to check: for one model size, peak RSS at K = 500 stays within a small constant
of K = 10, because aggregation streams over the stored updates one at a time.

Usage::

    python -m bench.rounds --quick
    python -m bench.rounds --backends sqlite,postgres --sizes 1e5,1e7 --participants 10,100,500
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import psutil

from fedrec.local_server import CoordinatorProcess
from participant_sdk.wire import encode_update

ADMIN_TOKEN = "fra_bench-admin-token-0123456789abcdef0123456789abcdef"  # nosec B105 # a throwaway local benchmark coordinator
MB = 1024 * 1024


def model_shape(params: int) -> tuple[int, int]:
    """(num_items, dim) of an mf model with about ``params`` parameters (items x (dim + 1))."""
    dim = 32 if params <= 1_000_000 else 64
    return max(1, round(params / (dim + 1))), dim


# ---------------------------------------------------------------- the coordinator process


class Coordinator(CoordinatorProcess):
    """``fedrec serve`` in a subprocess (:mod:`fedrec.local_server`), its RSS sampled in a
    thread."""

    def __init__(self, data_dir: Path, database_url: str | None, max_upload: int) -> None:
        super().__init__(
            data_dir,
            database_url,
            admin_token=ADMIN_TOKEN,
            secret_key="bench-secret",  # nosec B106 # a throwaway local benchmark coordinator
            log_level="warning",
            env={
                "FEDREC_TIMER_INTERVAL_SECONDS": "0.5",
                "FEDREC_MAX_UPLOAD_BYTES": str(max_upload),
            },
        )
        self._samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> None:
        self._stop = threading.Event()
        super().start(timeout)
        assert self.process is not None
        self._sampler = threading.Thread(
            target=self._sample, args=(self.process.pid, self._stop), daemon=True
        )
        self._sampler.start()

    def _sample(self, pid: int, stop: threading.Event) -> None:
        proc = psutil.Process(pid)
        while not stop.is_set():
            try:
                rss = proc.memory_info().rss
                for child in proc.children(recursive=True):
                    rss += child.memory_info().rss
            except psutil.Error:
                return
            self._samples.append((time.monotonic(), rss))
            stop.wait(0.02)

    def rss_now(self) -> int:
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def peak_rss(self, start: float, end: float) -> int:
        window = [rss for t, rss in list(self._samples) if start <= t <= end]
        return max(window, default=0)

    def high_water_mark(self) -> int | None:
        assert self.process is not None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        super().stop(timeout)


@contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(
        make_url(base_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"fedrec_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(base_url)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------- one cell


@dataclass
class Cell:
    backend: str
    params: int
    participants: int
    rounds: int
    update_bytes: int = 0
    round_seconds: list[float] = field(default_factory=list)
    upload_seconds: list[float] = field(default_factory=list)
    aggregate_seconds: list[float] = field(default_factory=list)
    rss_idle: int = 0  # a freshly started coordinator
    rss_upload_peak: int = 0  # sampled while the K uploads arrive
    rss_aggregate_peak: int = 0  # high-water mark of a fresh process that only aggregates
    error: str | None = None

    @property
    def upload_mb_per_s(self) -> float:
        total = self.update_bytes * self.participants * len(self.upload_seconds)
        seconds = sum(self.upload_seconds)
        return total / MB / seconds if seconds else math.nan


def _deltas(num_items: int, dim: int) -> dict[str, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(0)
    return {
        "item_factors": (rng.standard_normal((num_items, dim)) * 1e-3).astype(np.float32),
        "item_bias": (rng.standard_normal(num_items) * 1e-3).astype(np.float32),
    }


def run_cell(cell: Cell, *, workers: int, work_dir: Path, postgres_url: str | None) -> Cell:
    num_items, dim = model_shape(cell.params)
    deltas = _deltas(num_items, dim)
    sample = encode_update(deltas, round=1, base_version=0, num_examples=1)
    cell.update_bytes = len(sample)
    del sample
    data_dir = work_dir / f"{cell.backend}-{cell.params}-{cell.participants}" / "data"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _database(cell.backend, postgres_url) as database_url:
        server = Coordinator(data_dir, database_url, max_upload=2 * cell.update_bytes + MB)
        server.start()
        try:
            _rounds(server, cell, num_items, dim, deltas, workers)
        except Exception as exc:  # noqa: BLE001 - a failed cell is reported in the table
            cell.error = f"{type(exc).__name__}: {exc}"
        finally:
            server.stop()
            shutil.rmtree(data_dir.parent, ignore_errors=True)
    return cell


@contextmanager
def _database(backend: str, postgres_url: str | None) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    assert postgres_url, "checked by main()"
    with postgres_database(postgres_url) as url:
        yield url


def _rounds(
    server: Coordinator,
    cell: Cell,
    num_items: int,
    dim: int,
    deltas: dict[str, npt.NDArray[np.float32]],
    workers: int,
) -> None:
    """Each round: K uploads into one process; then a fresh process aggregates it (admin
    call), so its high-water mark is the memory aggregation needs and nothing else.
    One extra enrolled participant never uploads, so no round closes on its own."""
    admin = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=3600
    )
    created = admin.post(
        "/v1/federations",
        json={
            "name": "bench",
            "model": {"kind": "mf", "num_items": num_items, "dim": dim, "seed": 0},
            "rounds": {"min_participants": 1, "max_rounds": cell.rounds},
            "deploy": {"policy": "none"},
        },
    )
    created.raise_for_status()
    fid = created.json()["id"]
    tokens = [
        admin.post(f"/v1/federations/{fid}/participants", json={"name": f"p{i}"}).json()["token"]
        for i in range(cell.participants + 1)
    ][: cell.participants]
    local = threading.local()

    def upload(index: int, number: int, base_version: int) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=server.url, timeout=600)
        # distinct bytes per participant (num_examples differs): no blob is deduplicated
        body = encode_update(
            deltas, round=number, base_version=base_version, num_examples=1 + index
        )
        response = client.put(
            f"/v1/federations/{fid}/rounds/{number}/update",
            content=body,
            headers={
                "Authorization": f"Bearer {tokens[index]}",
                "Content-Type": "application/octet-stream",
            },
        )
        response.raise_for_status()
        return len(body)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for number in range(1, cell.rounds + 1):
                current = admin.get(f"/v1/federations/{fid}/rounds/current").json()
                assert current["number"] == number, current
                base_version = current["base_version"]
                started = time.monotonic()
                list(
                    pool.map(
                        lambda i, n=number, b=base_version: upload(i, n, b),
                        range(cell.participants),
                    )
                )
                uploaded = time.monotonic()
                cell.rss_upload_peak = max(cell.rss_upload_peak, server.peak_rss(started, uploaded))

                server.stop()  # a fresh process aggregates: its peak is aggregation's own
                server.start()
                cell.rss_idle = max(cell.rss_idle, server.rss_now())
                aggregating = time.monotonic()
                response = admin.post(f"/v1/federations/{fid}/rounds/{number}/aggregate")
                response.raise_for_status()
                aggregated = time.monotonic()
                cell.rss_aggregate_peak = max(
                    cell.rss_aggregate_peak,
                    server.high_water_mark() or server.peak_rss(aggregating, aggregated),
                )
                cell.upload_seconds.append(uploaded - started)
                cell.aggregate_seconds.append(aggregated - aggregating)
                cell.round_seconds.append((uploaded - started) + (aggregated - aggregating))
                round_row = admin.get(f"/v1/federations/{fid}/rounds/{number}").json()
                assert round_row["state"] == "closed", round_row
                assert round_row["update_count"] == cell.participants, round_row
    finally:
        admin.close()


# ---------------------------------------------------------------- the table


def _mb(value: int | None) -> str:
    return "-" if not value else f"{value / MB:,.0f}"


def print_table(cells: list[Cell]) -> None:
    header = (
        "| backend | params | K | rounds | update MB | round s (median) | upload MB/s "
        "| aggregate s (median) | RSS idle MB | RSS peak uploading MB | RSS peak aggregating MB |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for c in cells:
        if c.error:
            print(f"| {c.backend} | {c.params:.0e} | {c.participants} | error: {c.error} |")
            continue
        print(
            f"| {c.backend} | {c.params:.0e} | {c.participants} | {len(c.round_seconds)} "
            f"| {c.update_bytes / MB:.2f} | {statistics.median(c.round_seconds):.2f} "
            f"| {c.upload_mb_per_s:,.0f} | {statistics.median(c.aggregate_seconds):.2f} "
            f"| {_mb(c.rss_idle)} | {_mb(c.rss_upload_peak)} | {_mb(c.rss_aggregate_peak)} |"
        )
    print()
    for backend in dict.fromkeys(c.backend for c in cells):
        for params in dict.fromkeys(c.params for c in cells if c.backend == backend):
            row = {
                c.participants: c
                for c in cells
                if c.backend == backend and c.params == params and not c.error
            }
            if len(row) < 2:
                continue
            low, high = row[min(row)], row[max(row)]
            print(
                f"{backend}, {params:.0e} params ({params * 4 / MB:,.1f} MB float32): "
                f"peak RSS aggregating K={high.participants}: {_mb(high.rss_aggregate_peak)} MB, "
                f"K={low.participants}: {_mb(low.rss_aggregate_peak)} MB "
                f"({(high.rss_aggregate_peak - low.rss_aggregate_peak) / MB:+,.0f} MB)"
            )
    sys.stdout.flush()


# ---------------------------------------------------------------- command line


def _ints(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--sizes", default="1e5,1e7", help="float32 parameters, comma-separated")
    parser.add_argument("--participants", default="10,100,500")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell (median)")
    parser.add_argument(
        "--max-round-gb",
        type=float,
        default=4.0,
        help="cells uploading more than this per round run --big-rounds rounds instead",
    )
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=8, help="concurrent uploads, every K")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("FEDREC_BENCH_POSTGRES_URL")
        or os.environ.get("FEDREC_TEST_POSTGRES_URL"),
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument(
        "--quick", action="store_true", help="sqlite only, 1e5 params, K = 10 and 100, 2 rounds"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.backends, args.sizes, args.participants, args.rounds = "sqlite", "1e5", "10,100", 2
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            parser.error(f"unknown backend {backend!r}")
    if "postgres" in backends and not args.postgres_url:
        parser.error("--backends postgres needs --postgres-url (or FEDREC_TEST_POSTGRES_URL)")

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="fedrec-bench-"))
    cells: list[Cell] = []
    try:
        for backend in backends:
            for params in _ints(args.sizes):
                for k in _ints(args.participants):
                    round_bytes = k * params * 4
                    rounds = (
                        args.big_rounds if round_bytes > args.max_round_gb * 1e9 else args.rounds
                    )
                    cell = Cell(backend, params, k, rounds)
                    print(
                        f"# {backend}: {params:.0e} params, K={k}, {rounds} round(s) ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    started = time.monotonic()
                    cells.append(
                        run_cell(
                            cell,
                            workers=args.workers,
                            work_dir=work_dir,
                            postgres_url=args.postgres_url,
                        )
                    )
                    print(
                        f"#   done in {time.monotonic() - started:.0f}s"
                        + (f" ({cell.error})" if cell.error else ""),
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print_table(cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
