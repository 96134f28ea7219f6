"""Generated secrets: one file per secret (token-hash key, admin token, audit key, signing
key), owner-only, distinct, and the same for every process starting on one data folder."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from coordinator.bootstrap import load_secrets, load_signer
from coordinator.config import Settings

FILES = ("secret_key", "admin_token", "audit_key", "signing_key.pem")


def test_each_secret_has_its_own_owner_only_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    loaded = load_secrets(settings)
    load_signer(settings)
    contents = {name: (tmp_path / name).read_bytes() for name in FILES}
    assert len(set(contents.values())) == len(FILES)
    for name in FILES:
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    assert loaded.secret_key != loaded.audit_key
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_processes_starting_together_share_every_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    results: list[tuple[bytes, bytes, str, str]] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        secrets = load_secrets(settings)
        signer = load_signer(settings)
        results.append(
            (secrets.secret_key, secrets.audit_key, secrets.admin_token, signer.public_key_b64)
        )

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8
    assert len(set(results)) == 1
    assert all(part for part in results[0])  # nobody read a file half-written
