"""The Dockerfile's own install and start commands, run here without Docker.

No Docker engine runs on this machine, so this test interprets the Dockerfile: it
copies what COPY copies into a scratch folder, runs each RUN install command with a
fresh virtualenv standing in for the image's Python, starts the ENTRYPOINT with the
image's ENV (host, port and data folder pointed at the test's), and runs the
HEALTHCHECK command against it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_RUN_PREFIXES = ("useradd",)  # creating the image's system user needs root in the image


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    lines: list[str] = []
    current = ""
    for raw in dockerfile.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    out = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_dockerfile_install_and_start(tmp_path: Path) -> None:
    instructions = _instructions(ROOT / "Dockerfile")
    assert instructions[0][0] == "FROM"
    assert "slim" in instructions[0][1]
    assert ("USER", "fedrec") in instructions

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    workdir = tmp_path / "app"
    workdir.mkdir()
    entrypoint: list[str] = []
    healthcheck = ""
    for keyword, rest in instructions:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif keyword == "COPY":
            *sources, _dest = rest.split()
            for source in sources:
                src = ROOT / source
                target = workdir / source
                if src.is_dir():
                    shutil.copytree(
                        src,
                        target,
                        ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True,
                    )
                else:
                    shutil.copy2(src, target)
        elif keyword == "RUN" and not rest.startswith(SKIPPED_RUN_PREFIXES):
            result = subprocess.run(
                rest, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, f"RUN {rest} failed:\n{result.stdout}\n{result.stderr}"
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif keyword == "HEALTHCHECK":
            healthcheck = rest.split(" CMD ", 1)[1]

    assert entrypoint == ["fedrec", "serve"]
    port = _free_port()
    env.update(
        FEDREC_HOST="127.0.0.1", FEDREC_PORT=str(port), FEDREC_DATA_DIR=str(tmp_path / "data")
    )
    run_dir = tmp_path / "elsewhere"  # not the source tree: the installed package must suffice
    run_dir.mkdir()
    log = tmp_path / "serve.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            entrypoint, cwd=run_dir, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(
                healthcheck, shell=True, env=env, capture_output=True, cwd=run_dir
            )
            if check.returncode == 0:
                break
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.5)
        assert (tmp_path / "data" / "fedrec.db").exists()
        assert (tmp_path / "data" / "admin_token").stat().st_mode & 0o077 == 0
        assert "admin token:" in log.read_text()
    finally:
        server.terminate()
        server.wait(timeout=20)
