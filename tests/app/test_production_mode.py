"""``environment=production`` refuses guessable secrets at startup (issue 12, finding 10:
admin token ``a`` and an empty secret were accepted)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from coordinator.app import build_context
from coordinator.bootstrap import InsecureSettingsError, token_strength_bits
from coordinator.config import Settings
from fedrec.cli import main

STRONG = secrets.token_urlsafe(32)
KEY = secrets.token_hex(32)


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite:///{tmp_path / 'fedrec.db'}",
        "admin_token": SecretStr(STRONG),
        "secret_key": SecretStr(KEY),
        "audit_key": SecretStr(secrets.token_hex(32)),
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"admin_token": SecretStr("a")}, "admin token is weak"),
        ({"admin_token": SecretStr("x" * 64)}, "admin token is weak"),
        ({"admin_token": SecretStr("password" * 4)}, "admin token is weak"),
        ({"secret_key": SecretStr("")}, "secret key"),
        ({"secret_key": SecretStr("changeme")}, "secret key"),
        ({"secret_key": SecretStr("short-key")}, "secret key"),
        ({"secret_key": SecretStr(STRONG)}, "equals the admin token"),
        ({"audit_key": SecretStr("")}, "audit key"),
        ({"audit_key": SecretStr(KEY)}, "audit key equals the secret key"),
    ],
)
def test_weak_or_default_secrets_are_refused(
    tmp_path: Path, overrides: dict[str, object], complaint: str
) -> None:
    with pytest.raises(InsecureSettingsError, match=complaint) as info:
        build_context(_settings(tmp_path, **overrides))
    assert "environment=production" in str(info.value)


def test_a_weak_token_in_the_token_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin_token").write_text("admin\n")
    with pytest.raises(InsecureSettingsError, match="admin token is weak"):
        build_context(_settings(tmp_path, admin_token=None))


@pytest.mark.parametrize(
    "hook",
    [
        "FEDREC_TEST_AGGREGATION_PAUSE_SECONDS",
        "FEDREC_TEST_GROUP_COMMIT_PAUSE_SECONDS",
        "FEDREC_TEST_EASE_CHILD_PAUSE_SECONDS",
    ],
)
def test_test_hooks_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: str) -> None:
    monkeypatch.setenv(hook, "5")
    with pytest.raises(InsecureSettingsError, match=hook):
        build_context(_settings(tmp_path))


def test_generated_secrets_pass(tmp_path: Path) -> None:
    context = build_context(_settings(tmp_path, admin_token=None, secret_key=None, audit_key=None))
    try:
        assert (tmp_path / "data" / "admin_token").exists()
    finally:
        context.sessions.kw["bind"].dispose()


def test_development_accepts_what_production_refuses(tmp_path: Path) -> None:
    context = build_context(
        _settings(tmp_path, environment="development", admin_token=SecretStr("a"))
    )
    context.sessions.kw["bind"].dispose()


def test_serve_exits_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDREC_ENVIRONMENT", "production")
    monkeypatch.setenv("FEDREC_ADMIN_TOKEN", "a")
    assert main(["serve", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "refusing to start with environment=production" in err
    assert "admin token is weak" in err


def test_serve_needs_both_tls_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--ssl-certfile", "cert.pem"]
    assert main(args) == 2
    assert "needs both --ssl-certfile and --ssl-keyfile" in capsys.readouterr().err


def test_strength_estimate() -> None:
    assert token_strength_bits("") == 0
    assert token_strength_bits("aaaa") == 0
    assert token_strength_bits(secrets.token_urlsafe(32)) > 150
