"""Coordinator settings: one pydantic-settings class, every variable prefixed ``FEDREC_``."""

from __future__ import annotations

from enum import StrEnum
from ipaddress import ip_network
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coordinator.domain.round_notifier import MAX_LONG_POLL_SECONDS_LIMIT

__all__ = ["BlobBackend", "Environment", "Settings"]


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class BlobBackend(StrEnum):
    """Where blob bytes live (coordinator/store/blobs.py)."""

    local = "local"
    postgres = "postgres"
    s3 = "s3"


class Settings(BaseSettings):
    """Everything the coordinator can be configured with (env vars or a ``.env`` file)."""

    model_config = SettingsConfigDict(env_prefix="FEDREC_", env_file=".env", extra="ignore")

    environment: Environment = Environment.development
    data_dir: Path = Field(
        default=Path("fedrec-data"),
        description="Holds the blob folder (local blob store), the embedded SQLite database "
        "and generated secrets.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite file in data_dir. "
        "postgresql://... is switched to the psycopg 3 driver.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bootstrap admin bearer token; generated into data_dir/admin_token if "
        "unset. Expires admin_token_ttl_seconds after the first start with it; a new one "
        "revokes the one before (docs/security.md).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key of the token hashes; generated into data_dir/secret_key if unset. "
        "Replicas sharing a database must share it.",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 private key (PKCS#8 PEM) that signs model versions; a secret "
        "separate from secret_key. Default: signing_key_file, else generated into "
        "data_dir/signing_key.pem. Every process and replica must use the same key.",
    )
    audit_key: SecretStr | None = Field(
        default=None,
        description="Key of the audit log's HMAC chain; generated into data_dir/audit_key if "
        "unset. A secret separate from secret_key; every process and replica must share it.",
    )
    signing_key_file: Path | None = Field(
        default=None, description="Path of the PEM signing key (instead of signing_key)."
    )
    ssl_certfile: Path | None = Field(
        default=None,
        description="PEM certificate chain: `fedrec serve` speaks HTTPS (uvicorn's TLS). "
        "Or terminate TLS at a reverse proxy (docs/security.md).",
    )
    ssl_keyfile: Path | None = Field(default=None, description="PEM private key of ssl_certfile.")
    participant_token_ttl_seconds: float = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="Participant tokens expire this long after they are issued; the SDK "
        "refreshes them (POST .../participants/me/token) before they do.",
    )
    admin_token_ttl_seconds: float = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="Admin tokens expire this long after they are issued, unless created "
        "with another lifetime (POST /v1/admin/tokens `expires_in_seconds`); the bootstrap "
        "token (admin_token, or data_dir/admin_token) this long after the first start "
        "with it.",
    )
    token_refresh_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        description="After a refresh, the replaced token still works this long (a lost "
        "response can be retried with it).",
    )
    token_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description="A process answers a token it authenticated this long ago from memory "
        "(never past the token's expiry; revocations reach every process within 0.5 s "
        "through the auth_generation counter whatever this is); 0: look every token up.",
    )
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    aggregation_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A round being aggregated is the claiming process's for this long; a "
        "long EASE solve renews it every third of it while it runs. Past it (a crashed "
        "process), any process's timer takes the round over and aggregates it again.",
    )
    heavy_workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Aggregations of `ease` federations (a dense solve: minutes and GBs at "
        "20,000 items) that one process runs at once, on threads of their own: the other "
        "federations' rounds keep aggregating meanwhile. A round that finds them busy waits "
        "for the timer, unclaimed, so another process may take it.",
    )
    ease_subprocess_min_items: int = Field(
        default=1_000,
        ge=0,
        description="`ease` solves of this many items or more run in a child process "
        "(scipy's LAPACK holds the GIL: in-process, a solve stalls every request); smaller "
        "ones, a few hundred ms at most, in the aggregating thread.",
    )
    ease_solve_timeout_seconds: float = Field(
        default=4 * 3600.0,
        gt=0,
        description="An `ease` solve's child process is stopped after this long and the "
        "round released (the timer tries again).",
    )
    ease_memory_budget_bytes: int = Field(
        default=8 * 2**30,
        gt=0,
        description="Peak memory one `ease` solve may need (summed Gram, LAPACK's work "
        "array, the model; domain/ease_solve.solve_cost): a federation over it is refused "
        "at creation (422 naming the largest num_items that fits). Each process runs up "
        "to heavy_workers solves at once.",
    )
    timer_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often the deadline/lease timer scans open rounds."
    )
    sqlite_busy_timeout_ms: int = 15_000
    database_pool_size: int = Field(
        default=40,
        ge=1,
        le=1000,
        description="PostgreSQL connections each process keeps (one per request worker "
        "thread; 5 more may open under load): with `--workers N` the server needs up to "
        "N × (this + 5) connections, within PostgreSQL's max_connections (default 100). "
        "Fewer than 40 makes the rest open and close a connection per transaction.",
    )
    idempotency_ttl_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description="How long an Idempotency-Key's recorded response is replayed; older "
        "records are deleted by the timer and the key counts as new.",
    )
    blob_store: BlobBackend = Field(
        default=BlobBackend.local,
        description="local: files in data_dir/blobs (replicas on several hosts need it "
        "shared); postgres: rows of the coordinator's PostgreSQL database (replicas share "
        "only the database); s3: objects of an S3 bucket (the s3 extra).",
    )
    inline_blob_max_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        description="Updates and model versions up to this size are stored as rows of the "
        "transaction that records them (one fsync: its COMMIT) instead of a file or a blob "
        "transaction of their own; 0: never. local and postgres blob stores only.",
    )
    s3_bucket: str | None = Field(default=None, description="Bucket of FEDREC_BLOB_STORE=s3.")
    s3_prefix: str = Field(
        default="fedrec/blobs/", description="Key prefix of the blobs in the bucket."
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 API endpoint other than AWS (MinIO, Ceph...); credentials come from "
        "the AWS_* environment or boto3's other usual sources.",
    )
    s3_region: str | None = Field(default=None, description="Region of the bucket.")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that may scrape /metrics (and nothing else); the admin "
        "token always may.",
    )
    anonymous_max_body_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Body limit of a request without a valid token: it is refused (413) "
        "before the coordinator reads more than this.",
    )
    participant_rate_per_second: float = Field(
        default=50.0,
        ge=0,
        description="Requests per second each participant token may sustain (token bucket, "
        "burst participant_rate_burst); 0 disables. The admin token is not limited.",
    )
    participant_rate_burst: int = Field(default=500, gt=0)
    anonymous_rate_per_second: float = Field(
        default=20.0,
        ge=0,
        description="Requests per second one client address may send without a valid token "
        "(authenticated requests count per token, never per address); 0 disables.",
    )
    anonymous_rate_burst: int = Field(default=100, gt=0)
    auth_failure_rate_per_second: float = Field(
        default=0.2,
        ge=0,
        description="Guessed tokens (unknown, not revoked or expired) per second one client "
        "address may sustain (burst auth_failure_burst), throttled hardest; 0 disables.",
    )
    auth_failure_burst: int = Field(default=50, gt=0)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For names the client; "
        "from any other peer the header is ignored.",
    )
    max_long_polls_per_token: int = Field(
        default=4,
        gt=0,
        description="Long-polls (rounds/current?wait=) one token may hold at once; more: 429.",
    )
    max_long_poll_seconds: int = Field(
        default=300,
        ge=1,
        le=MAX_LONG_POLL_SECONDS_LIMIT,
        description="The longest `wait` a long-poll (rounds/current?wait=) may ask for, "
        "advertised as `Round.max_wait_seconds` (the SDK waits that long per request). A "
        "waiting participant renews its poll this often, so longer is cheaper; behind a "
        "proxy that cuts idle requests (nginx's proxy_read_timeout: 60 s) set it below "
        "that proxy's timeout.",
    )
    max_cohort_wait_seconds: int = Field(
        default=1800,
        ge=1,
        le=MAX_LONG_POLL_SECONDS_LIMIT,
        description="The longest `wait` of a long-poll with `in_cohort=true` (a participant "
        "waiting through the rounds it is not drawn into), advertised as "
        "`Round.max_cohort_wait_seconds`; at least max_long_poll_seconds. Under sampling most "
        "participants wait most of the time: each renews its poll this often, so 10,000 of "
        "them send ~6 renewals/s at 1,800 s instead of ~33/s at 300 s. The proxy caveat of "
        "max_long_poll_seconds applies (a cut poll is asked again, at the cost of a request).",
    )
    max_requests_in_flight: int = Field(
        default=128,
        ge=0,
        description="Requests (other than long-polls) one coordinator process answers at "
        "once; more are refused at once with 503 `overloaded` and a `Retry-After` instead "
        "of queueing past the clients' timeouts. /healthz, /readyz and /metrics are never "
        "refused. 0: no bound.",
    )
    max_long_polls: int = Field(
        default=20_000,
        ge=0,
        description="Long-polls (rounds/current?after=&wait=) one coordinator process holds "
        "at once; more: 503 `overloaded` with `Retry-After`. Each holds a connection (an open "
        "file: raise `ulimit -n` above it). 0: no bound.",
    )
    max_long_poll_starts: int = Field(
        default=128,
        ge=0,
        description="Long-polls one coordinator process starts at once: authenticating a "
        "token it has not seen in the last seconds, on a worker thread (the rest of a "
        "poll's reads are shared). More are refused at once with 503 `overloaded` and a "
        "`Retry-After` instead of queueing for the threads past the clients' timeouts (a "
        "crowd of first requests; 32 refused ~1 in 20 polls of a 100-participant round on a "
        "loaded 2-core machine, where a cached token's generation check also takes a "
        "thread). 0: no bound.",
    )
    overload_retry_after_seconds: int = Field(
        default=1,
        ge=1,
        description="The shortest `Retry-After` of a 503 `overloaded`; the longest grows "
        "with how many requests were refused lately against how many were answered, up to "
        "overload_retry_after_max_seconds, each refusal drawing at random in between.",
    )
    overload_retry_after_max_seconds: int = Field(
        default=60,
        ge=1,
        description="The longest `Retry-After` of a 503 `overloaded` (the SDK waits at most "
        "60 s per Retry-After: longer is cut to that).",
    )
    long_poll_interval_seconds: float = Field(
        default=0.2,
        gt=0,
        description="How often this process's round notifier reads the rounds that long-polls "
        "wait on (one query per interval for all of them).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one JSON object per log line, with the request's `request_id`.",
    )

    @field_validator("database_url")
    @classmethod
    def _use_psycopg_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {proxy!r} is not an IP address or network (CIDR)"
                ) from None
        return value

    @model_validator(mode="after")
    def _blob_store_is_complete(self) -> Settings:
        if self.blob_store is BlobBackend.postgres and not self.resolved_database_url.startswith(
            "postgresql"
        ):
            raise ValueError(
                "FEDREC_BLOB_STORE=postgres keeps blobs in the coordinator's database: "
                "set FEDREC_DATABASE_URL to a postgresql:// URL (or use FEDREC_BLOB_STORE=local)"
            )
        if self.blob_store is BlobBackend.s3 and not self.s3_bucket:
            raise ValueError("FEDREC_BLOB_STORE=s3 needs FEDREC_S3_BUCKET")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fedrec.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"
