"""fedrec's round against Flower's, side by side in one run on this machine.

For each case (K participants, P float32 parameters of an mf model: items x 64 factors
plus one bias per item), R rounds of:

* **fedrec**: a real coordinator (``fedrec serve`` via :mod:`fedrec.local_server`, its
  own process, SQLite, every upload fsynced before its 201) and K participants in
  threads of this process, each downloading the round's base model over HTTP and
  uploading its delta as safetensors (httpx on the SDK's keep-alive transport, as
  ``fedrec simulate``'s participants; httpx's own until 2026-12-07; the round's URLs
  parsed once, as the SDK's client keeps them, since 2026-12-07). The round's time
  runs from the K downloads starting to the next round being open (the last upload
  closes the round; the coordinator aggregates and opens the next one), seen by one
  long-poll of the admin (``rounds/current?after=N&wait=60``) issued with the downloads
  and answered when the next round opens, as a participant waiting for it is (it polled
  every 2 ms until 2026-12-07, then asked once the participants had returned, until the
  coordinator woke long-polls without a read: bench/RESULTS.md, "small-round (2026-12-07):
  long-polls woken without a read").
* **Flower** 1.42 (legacy gRPC ``start_server``/``start_client``, FedAvg, in memory),
  installed into ``.peers-venv`` (git-ignored; never a project dependency) on the
  first run: the server in one process, the K clients in threads of another. Its round
  runs from ``configure_fit`` to the end of ``aggregate_fit`` (bench/peers/flower_round.py).

The first round of each side is a warm-up; the median of the others is printed, with
the ratio fedrec / Flower (< 1: fedrec is faster). Beside them, the **durable floor**: the
time to write a round's bytes (K updates and the new version, each P x 4 bytes) into a
file of the data directory's disk and fdatasync it once, what any design that acknowledges
uploads only once they are on disk pays at least (median of R; the file's blocks are
allocated once, as SQLite reuses its log's). Nothing is asserted: figures depend on the
machine and its load, so compare ratios from one run.

Usage::

    python -m bench.peers.flower                      # K = 2, 10 at 1,682 x 64; K = 10 at 10^7
    python -m bench.peers.flower --cases 2:1682 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess  # nosec B404 # runs the bench's side venv and Flower
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

from fedrec.local_server import CoordinatorProcess, free_port
from participant_sdk import keep_alive_transport
from participant_sdk.wire import encode_update

# a throwaway token of the bench's own loopback coordinator
ADMIN_TOKEN = "fra_bench-admin-token-0123456789abcdef0123456789abcdef"  # nosec B105
DIM = 64
FLOWER = "flwr==1.42.*"
PEERS_VENV = Path(__file__).resolve().parents[2] / ".peers-venv"  # beside .venv, not under bench/
FLOWER_SCRIPT = Path(__file__).resolve().parent / "flower_round.py"
MB = 1024 * 1024
# a coordinator's start (imports, migrations) under `nice` on a machine at load 20-30 took
# longer than fedrec.local_server's default 30 s
START_TIMEOUT_SECONDS = 180.0


@dataclass
class Case:
    participants: int
    items: int

    @property
    def params(self) -> int:
        return self.items * (DIM + 1)


def peers_python() -> Path:
    """The side virtualenv's python, with Flower installed into it on first use."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        create = [sys.executable, "-m", "venv", str(PEERS_VENV)]
        subprocess.run(create, check=True, timeout=300)  # nosec B603 # fixed argv: the bench's own side venv, no outside input
    probe = subprocess.run(  # nosec B603 # fixed argv: the bench's own side venv, no outside input
        [str(python), "-c", "import flwr"], capture_output=True, timeout=120, check=False
    )
    if probe.returncode != 0:
        subprocess.run(  # nosec B603 # fixed argv: the bench's own side venv, no outside input
            [str(python), "-m", "pip", "install", "-q", FLOWER], check=True, timeout=1800
        )
    return python


# ---------------------------------------------------------------- Flower


def flower_rounds(case: Case, rounds: int, timeout: int) -> list[float]:
    python = str(peers_python())
    address = f"127.0.0.1:{free_port()}"
    common = [
        "--address", address, "--clients", str(case.participants),
        "--items", str(case.items), "--dim", str(DIM),
        "--rounds", str(rounds), "--timeout", str(timeout),
    ]  # fmt: skip
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "GRPC_VERBOSITY": "ERROR"}
    server = subprocess.Popen(  # nosec B603 # fixed argv: the bench's own side venv, no outside input
        [python, str(FLOWER_SCRIPT), "server", *common],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    clients = subprocess.Popen(  # nosec B603 # fixed argv: the bench's own side venv, no outside input
        [python, str(FLOWER_SCRIPT), "clients", *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, _ = server.communicate(timeout=timeout)
        _, err = clients.communicate(timeout=60)
    finally:
        for process in (server, clients):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    if server.returncode != 0 or clients.returncode != 0:
        raise RuntimeError(f"Flower failed: server {server.returncode}, clients {err[-2000:]!r}")
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    return list(json.loads(lines[-1])["round_seconds"])


# ---------------------------------------------------------------- fedrec


def source_env(source: Path) -> dict[str, str]:
    """Run ``fedrec serve`` from another source tree. PYTHONSAFEPATH: ``python -m`` puts
    the working folder (this checkout) first on sys.path, ahead of PYTHONPATH, so without
    it the "other" tree was this one."""
    return {"PYTHONPATH": str(source), "PYTHONSAFEPATH": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def fedrec_rounds(
    case: Case,
    rounds: int,
    work_dir: Path,
    source: Path | None = None,
    cpu_seconds: list[float] | None = None,
) -> list[float]:
    rng = np.random.default_rng(1)
    deltas = {
        "item_factors": (rng.standard_normal((case.items, DIM)) * 1e-3).astype(np.float32),
        "item_bias": (rng.standard_normal(case.items) * 1e-3).astype(np.float32),
    }
    update_bytes = case.items * (DIM + 1) * 4
    data_dir = work_dir / f"fedrec-{case.participants}-{case.items}" / "data"
    data_dir.parent.mkdir(parents=True)
    server = CoordinatorProcess(
        data_dir,
        admin_token=ADMIN_TOKEN,
        secret_key="bench-secret",  # nosec B106 # the bench's loopback coordinator
        log_level="warning",
        env={
            "FEDREC_MAX_UPLOAD_BYTES": str(2 * update_bytes + MB),
            # another checkout's coordinator (a before/after comparison), same participants
            **(source_env(source) if source else {}),
        },
    )
    server.start(timeout=START_TIMEOUT_SECONDS)
    assert server.process is not None
    coordinator = psutil.Process(server.process.pid)

    def cpu() -> float:  # the coordinator's CPU seconds so far (user + system)
        times = coordinator.cpu_times()
        return float(times.user + times.system)

    try:
        return _fedrec_rounds(server.url, case, rounds, deltas, cpu_seconds, cpu)
    finally:
        server.stop()


def _fedrec_rounds(
    url: str,
    case: Case,
    rounds: int,
    deltas: dict[str, np.ndarray],
    cpu_seconds: list[float] | None = None,
    cpu: Callable[[], float] | None = None,
) -> list[float]:
    """Run the rounds; their wall seconds, and (into ``cpu_seconds``) the coordinator's
    CPU seconds per round when ``cpu`` reads them."""
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    created = admin.post(
        "/v1/federations",
        json={
            "name": "peers",
            "model": {"kind": "mf", "num_items": case.items, "dim": DIM, "seed": 0},
            "rounds": {"min_participants": case.participants, "max_rounds": rounds + 1},
            "deploy": {"policy": "none"},
        },
        timeout=120,
    )
    created.raise_for_status()
    fid = created.json()["id"]
    tokens = [
        admin.post(f"/v1/federations/{fid}/participants", json={"name": f"p{i}"}).json()["token"]
        for i in range(case.participants)
    ]
    clients = participant_clients(url, tokens)

    def participant(index: int, number: int, base_version: int, urls: RoundUrls) -> None:
        client = clients[index]
        weights = _once_more(lambda: client.get(urls.weights))
        weights.raise_for_status()
        body = encode_update(
            deltas, round=number, base_version=base_version, num_examples=1 + index
        )
        _once_more(
            lambda: client.put(  # the same bytes again return the original receipt
                urls.upload,
                content=body,
                headers={"Content-Type": "application/octet-stream"},
            )
        ).raise_for_status()

    seconds: list[float] = []
    current_path = f"/v1/federations/{fid}/rounds/current"
    try:
        with ThreadPoolExecutor(max_workers=case.participants + 1) as pool:
            current = admin.get(current_path).json()
            for number in range(1, rounds + 1):
                assert current["number"] == number, current
                started = time.perf_counter()
                cpu_before = cpu() if cpu else 0.0
                # the long-poll for the next round waits while the participants work, as a
                # participant's does: its answer is the round's end
                next_round = pool.submit(_next_round, admin, current_path, number)
                base_version = int(str(current["base_version"]))
                urls = round_urls(url, fid, number, base_version)
                futures = [
                    pool.submit(participant, i, number, base_version, urls)
                    for i in range(case.participants)
                ]
                for future in futures:
                    future.result()
                current = next_round.result()
                seconds.append(time.perf_counter() - started)
                if cpu is not None and cpu_seconds is not None:
                    cpu_seconds.append(cpu() - cpu_before)
    finally:
        for client in clients:
            client.close()
        admin.close()
    return seconds


@dataclass(frozen=True)
class RoundUrls:
    """A round's two participant URLs, absolute and parsed once for all its participants,
    as the SDK's client keeps them (``participant_sdk._base_client._parsed_url``): httpx
    parses a str URL character by character, twice per request when it is relative to
    the client's ``base_url`` (~0.25 ms of a participant's CPU per request on this
    machine, bench/RESULTS.md, "small-round (2026-12-07): long-polls woken without a
    read"), on the coordinator's cores."""

    weights: httpx.URL
    upload: httpx.URL


def round_urls(url: str, federation_id: str, number: int, base_version: int) -> RoundUrls:
    federation = f"{url}/v1/federations/{federation_id}"
    return RoundUrls(
        weights=httpx.URL(f"{federation}/models/{base_version}/weights"),
        upload=httpx.URL(f"{federation}/rounds/{number}/update"),
    )


def participant_clients(url: str, tokens: list[str]) -> list[httpx.Client]:
    """One client per participant, on the SDK's keep-alive ``http.client`` transport
    (what ``fedrec simulate`` gives its loopback participants): the participants share
    the coordinator's 2 cores, and httpx's own transport cost each of them ~0.35 ms more
    CPU per 437 KB download (bench/RESULTS.md, round-cpu)."""
    return [
        httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
            transport=keep_alive_transport(),
        )
        for token in tokens
    ]


def _next_round(admin: httpx.Client, path: str, number: int) -> dict[str, object]:
    """The round after ``number``, by long-poll: one request per round in the common case
    (issued with the round's downloads, it waits for the next round to open; the client
    is used by this one thread at a time). Polling every 2 ms instead put up to dozens of
    the bench's own requests into each round's coordinator CPU."""
    deadline = time.monotonic() + 600
    while True:
        answer = admin.get(path, params={"after": number, "wait": 60}, timeout=120)
        answer.raise_for_status()
        current: dict[str, object] = answer.json()
        if current["number"] != number:
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(f"round {number} did not close in 600 s")


def _once_more(call: Callable[[], httpx.Response]) -> httpx.Response:
    """One retry when the server closed an idle keep-alive connection just as the request
    went out on it (uvicorn's keep-alive timeout passes while a large round aggregates)."""
    try:
        return call()
    except httpx.RemoteProtocolError:
        return call()


# ---------------------------------------------------------------- the durable floor


def durable_floor_seconds(case: Case, rounds: int, work_dir: Path) -> list[float]:
    """Per round: write the round's K + 1 blobs of P float32 into one file and fdatasync
    it (the file preallocated and written once before, as SQLite reuses its log's blocks:
    an fsync that also commits a growing file's size costs more)."""
    blob = np.random.default_rng(2).standard_normal(case.params).astype(np.float32).tobytes()
    blobs = case.participants + 1
    path = work_dir / f"floor-{case.participants}-{case.items}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for index in range(blobs):  # allocate the blocks once
            os.pwrite(fd, blob, index * len(blob))
        os.fsync(fd)
        seconds = []
        for _ in range(rounds):
            started = time.perf_counter()
            for index in range(blobs):
                os.pwrite(fd, blob, index * len(blob))
            os.fdatasync(fd)
            seconds.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return seconds


# ---------------------------------------------------------------- the table


def _ms(seconds: list[float]) -> float:
    timed = seconds[1:] or seconds  # the first round warms up connections and caches
    return statistics.median(timed) * 1000


def _mean_ms(seconds: list[float]) -> float:
    # a mean, not a median: the kernel counts CPU time in 10 ms ticks
    timed = seconds[1:] or seconds
    return statistics.fmean(timed) * 1000 if timed else float("nan")


def run(cases: list[Case], rounds: int, timeout: int, source: Path | None = None) -> None:
    print(
        "| K | params | fedrec round ms | Flower round ms | fedrec / Flower "
        "| fedrec coordinator CPU ms / round | durable floor ms |"
    )
    print("|---|---|---|---|---|---|---|")
    work_dir = Path(tempfile.mkdtemp(prefix="fedrec-peers-"))
    try:
        for case in cases:
            print(f"# K={case.participants}, {case.params:,} params ...", file=sys.stderr)
            cpu: list[float] = []
            fedrec = _ms(fedrec_rounds(case, rounds, work_dir, source, cpu))
            flower = _ms(flower_rounds(case, rounds, timeout))
            floor = _ms(durable_floor_seconds(case, rounds, work_dir))
            print(
                f"| {case.participants} | {case.params:,} | {fedrec:,.1f} | {flower:,.1f} "
                f"| {fedrec / flower:.2f} | {_mean_ms(cpu):,.1f} | {floor:,.1f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _cases(text: str) -> list[Case]:
    out = []
    for part in text.split(","):
        k, items = part.split(":")
        out.append(Case(int(k), int(float(items))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default="2:1682,10:1682,10:153846",
        help="K:items, comma-separated (153,846 items x 65 = 10^7 parameters)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side; first = warm-up")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per Flower run")
    parser.add_argument(
        "--coordinator-source",
        type=Path,
        default=None,
        help="run the coordinator from this source tree (e.g. an exported older commit)",
    )
    args = parser.parse_args(argv)
    run(_cases(args.cases), args.rounds, args.timeout, args.coordinator_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
