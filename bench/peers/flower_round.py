"""Flower's side of the round comparison; runs in the bench's own virtualenv
(``.peers-venv``, made by :mod:`bench.peers.flower`), never in the project's.

``server`` runs Flower's legacy gRPC ``start_server`` with FedAvg for R rounds in memory
and prints one JSON line: the wall time of each round, measured inside the strategy
from the start of ``configure_fit`` (the model goes out to the K clients) to the end of
``aggregate_fit`` (the K results are folded into the new parameters).
``clients`` runs K legacy ``start_client`` clients in threads of one process; each
``fit`` returns a fixed delta of the model's shapes (as fedrec's participants do).

Imports only numpy and flwr: this file must run without the project installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import flwr as fl  # noqa: E402 - telemetry off before flwr reads it
import numpy as np  # noqa: E402

MAX_MESSAGE = 1 << 30  # room for a 10^7-parameter model in one gRPC message


def arrays(num_items: int, dim: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((num_items, dim)) * 1e-3).astype(np.float32),
        (rng.standard_normal(num_items) * 1e-3).astype(np.float32),
    ]


class TimedFedAvg(fl.server.strategy.FedAvg):  # type: ignore[misc]
    """FedAvg that records each round's wall time, configure_fit -> aggregate_fit."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.seconds: list[float] = []

    def configure_fit(self, server_round, parameters, client_manager):
        self.started[server_round] = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        out = super().aggregate_fit(server_round, results, failures)
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} client failures")
        self.seconds.append(time.perf_counter() - self.started[server_round])
        return out


def server(args: argparse.Namespace) -> None:
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.clients,
        min_evaluate_clients=0,
        min_available_clients=args.clients,
        initial_parameters=fl.common.ndarrays_to_parameters(arrays(args.items, args.dim, 0)),
    )
    fl.server.start_server(
        server_address=args.address,
        config=fl.server.ServerConfig(num_rounds=args.rounds, round_timeout=args.timeout),
        strategy=strategy,
        grpc_max_message_length=MAX_MESSAGE,
    )
    print(json.dumps({"round_seconds": strategy.seconds}), flush=True)


class DeltaClient(fl.client.NumPyClient):  # type: ignore[misc]
    def __init__(self, delta: list[np.ndarray], examples: int) -> None:
        self.delta = delta
        self.examples = examples

    def fit(self, parameters, config):  # noqa: ARG002 - no config here
        assert [p.shape for p in parameters] == [d.shape for d in self.delta]
        return self.delta, self.examples, {}


def clients(args: argparse.Namespace) -> None:
    delta = arrays(args.items, args.dim, 1)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            fl.client.start_client(
                server_address=args.address,
                client=DeltaClient(delta, 1 + index).to_client(),
                grpc_max_message_length=MAX_MESSAGE,
                max_retries=50,
                max_wait_time=float(args.timeout),
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the exit code
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.timeout)
    if errors or any(t.is_alive() for t in threads):
        print(f"flower clients failed: {errors!r}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "clients"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    (server if args.role == "server" else clients)(args)


if __name__ == "__main__":
    main()
