"""The end-to-end and fault tests' coordinator: a real ``fedrec serve`` process on
127.0.0.1 (:class:`fedrec.local_server.CoordinatorProcess`) with the tests' admin token
and a fast deadline timer."""

from __future__ import annotations

from pathlib import Path

from fedrec.local_server import CoordinatorProcess

__all__ = ["ADMIN_TOKEN", "ServerProcess"]

ADMIN_TOKEN = "fra_e2e-admin-token-0123456789abcdef0123456789abcdef"


class ServerProcess(CoordinatorProcess):
    """One coordinator process; ``kill()`` is SIGKILL, ``start()`` brings it back.

    ``extra_env`` adds or overrides ``FEDREC_*`` settings.
    """

    def __init__(self, data_dir: Path, database_url: str | None = None, **extra_env: str) -> None:
        super().__init__(
            data_dir,
            database_url,
            admin_token=ADMIN_TOKEN,
            secret_key="e2e-secret",
            env={"FEDREC_TIMER_INTERVAL_SECONDS": "0.2", **extra_env},
        )
