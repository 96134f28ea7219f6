"""``fedrec serve --ssl-certfile/--ssl-keyfile``: a real process speaking HTTPS, with a
self-signed certificate made by the test; the SDK trains through it."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedrec.local_server import HOST, free_port
from participant_sdk import Client
from tests.e2e.server import ADMIN_TOKEN


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "FEDREC_DATA_DIR": str(tmp_path / "data"),
        "FEDREC_ADMIN_TOKEN": ADMIN_TOKEN,
        "FEDREC_SECRET_KEY": "tls-test-secret",
    }
    command = [sys.executable, "-m", "fedrec.cli", "serve", "--host", HOST, "--port", str(port)]
    command += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", verify=trust, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url, trust
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow
def test_serves_https_and_the_sdk_downloads_signed_models(
    tls_server: tuple[str, ssl.SSLContext],
) -> None:
    url, trust = tls_server
    # the certificate is not in the system store: an unconfigured client refuses it
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=5)
    # plain HTTP on the TLS port gets no answer a client could use
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)
    with (
        httpx.Client(base_url=url, verify=trust) as http,
        Client(url, ADMIN_TOKEN, http_client=http) as admin,
    ):
        federation = admin.federations.create(
            "tls", {"kind": "mf", "num_items": 10, "dim": 4, "seed": 1}
        )
        weights = admin.models.weights(federation.id, 0)  # verified against the pinned key
        assert weights["item_factors"].shape == (10, 4)
        assert admin.signing_key is not None
