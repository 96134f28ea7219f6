"""A real coordinator on 127.0.0.1 on a free port: the one helper that ``fedrec
simulate``, the end-to-end and fault tests and the benchmarks start coordinators with.

Two forms, for two kinds of user:

* :class:`CoordinatorProcess`: ``fedrec serve`` in a subprocess, configured through
  the ``FEDREC_*`` environment as an operator would. ``kill()`` is SIGKILL (no
  shutdown hooks); ``start()`` again brings it back on the same port, data folder and
  database. The fault tests and ``bench.rounds`` need a process they can kill and
  measure.
* :func:`embedded_coordinator`: uvicorn in a background thread of this process, on a
  SQLite database in a given folder, with a generated admin token. ``fedrec simulate``
  and ``fedrec demo`` run it beside their participants.

Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess  # nosec B404 # starts fedrec's own coordinator, argv built here
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

__all__ = ["SAFE_PATH", "CoordinatorProcess", "embedded_coordinator", "free_port"]

# with ``--coordinator-source`` a bench puts an older tree on PYTHONPATH; ``python -m``
# would still import the current directory's packages first (sys.path[0] is the working
# directory) unless PYTHONSAFEPATH is set, and the "before" would be today's code
SAFE_PATH = {"PYTHONSAFEPATH": "1"}

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class CoordinatorProcess:
    """``fedrec serve`` as a subprocess on 127.0.0.1; its output goes to ``log_path``.

    ``env`` adds ``FEDREC_*`` settings (it may override the data folder, tokens and
    the rest); ``database_url`` (else SQLite in ``data_dir``) wins over it. ``workers``
    is ``fedrec serve --workers``: that many processes serve the port.
    """

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        *,
        admin_token: str,
        secret_key: str,
        log_level: str = "info",
        env: Mapping[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.admin_token = admin_token
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_level = log_level
        self.env = {
            **os.environ,
            "FEDREC_DATA_DIR": str(data_dir),
            "FEDREC_ADMIN_TOKEN": admin_token,
            "FEDREC_SECRET_KEY": secret_key,
            **(env or {}),
        }
        if database_url:
            self.env["FEDREC_DATABASE_URL"] = database_url
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fedrec.cli", *args]

    def start(self, timeout: float = 120.0) -> None:
        """Start the process and wait until ``/healthz`` answers 200.

        A process that exits fails at once; ``timeout`` only bounds a slow start, which on
        a loaded 2-core machine took over 30 s (the e2e and fault tests then failed to start)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # argv: this interpreter and fedrec's own command, no shell (bandit B603)
            self.process = subprocess.Popen(  # nosec B603
                self._command(
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--log-level",
                    self.log_level,
                    "--workers",
                    str(self.workers),
                ),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fedrec serve exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"fedrec serve did not become healthy:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing; what was acknowledged must survive."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL after ``timeout`` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run another ``fedrec`` command (``verify-lineage``, ``gc``...) on its settings."""
        return subprocess.run(  # nosec B603 # fedrec's own command, no shell
            self._command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@contextlib.contextmanager
def embedded_coordinator(data_dir: Path) -> Iterator[tuple[str, str]]:
    """A real uvicorn coordinator on 127.0.0.1 in a background thread; yields (url, token).

    Its SQLite database, blobs and generated admin token live in ``data_dir``; other
    settings come from the ``FEDREC_*`` environment, as for ``fedrec serve``.
    """
    import uvicorn

    from coordinator.app import create_app
    from coordinator.bootstrap import load_secrets
    from coordinator.config import Settings
    from coordinator.migrate import upgrade

    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{(data_dir / 'fedrec.db').resolve()}",
        blob_store="local",  # beside its SQLite file, whatever FEDREC_BLOB_STORE says
        host=HOST,
        port=free_port(),
        _env_file=None,
    )
    secrets = load_secrets(settings)
    upgrade(settings.resolved_database_url)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name="fedrec-embedded", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the embedded coordinator did not start")
        time.sleep(0.05)
    try:
        yield f"http://{settings.host}:{settings.port}", secrets.admin_token
    finally:
        server.should_exit = True
        thread.join(timeout=30)
