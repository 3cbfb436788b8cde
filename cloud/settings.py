"""Process settings of the cloud service and its ingest workers (CLOUD_* variables)."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetentionSettings(BaseModel):
    """Days of history kept per table (TimescaleDB policies or dropped partitions)."""

    events_days: Annotated[int, Field(ge=1, le=3650)] = 180
    health_days: Annotated[int, Field(ge=1, le=3650)] = 30
    telemetry_days: Annotated[int, Field(ge=1, le=3650)] = 365
    rollups_days: Annotated[int, Field(ge=1, le=3650)] = 1095
    compress_after_days: Annotated[int, Field(ge=1, le=365)] = 7
    dead_letters_days: Annotated[int, Field(ge=1, le=3650)] = 30


class S3Settings(BaseModel):
    """An S3-compatible snapshot store; unset values fall to boto3's own chain (AWS_* env)."""

    endpoint_url: str | None = Field(default=None, description="e.g. https://oss.county.gov.cn")
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "path"


class FleetSettings(BaseModel):
    """When the fleet monitor calls a node offline or a box unwell, and when it opens a
    technician's work order for it (CLOUD_FLEET__* variables)."""

    heartbeat_s: Annotated[float, Field(ge=1, le=3600)] = Field(
        default=30.0, description="A node's health interval when its desired config is unknown."
    )
    missed_heartbeats: Annotated[int, Field(ge=2, le=100)] = Field(
        default=3, description="Silent this many intervals: offline, even without a last will."
    )
    offline_after_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        default=120.0, description="Offline this long before a work order opens."
    )
    flap_window_s: Annotated[float, Field(ge=60, le=86400)] = Field(default=1800.0)
    flap_changes: Annotated[int, Field(ge=2, le=1000)] = Field(
        default=4,
        description="Online/offline changes within the window that make a node flapping: "
        "one node_flapping work order instead of one per drop.",
    )
    disk_full_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.9
    outbox_backlog_age_s: Annotated[float, Field(gt=0)] = Field(
        default=900.0, description="Oldest unsent entry older than this: a backlog."
    )
    outbox_backlog_depth: Annotated[int, Field(ge=1)] = 20_000
    check_interval_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    config_retry_after_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=10.0,
        description="A desired config the broker did not take when it was issued is "
        "published by the service, at most this long after it was issued, once the broker "
        "is back.",
    )


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOUD_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str | None = Field(
        default=None, description="postgresql://...; unset: an embedded PostgreSQL in data_dir."
    )
    broker_url: str | None = Field(
        default=None, description="mqtt://host:port; unset: a local broker is started."
    )
    broker_username: str | None = Field(
        default=None,
        description="This process's broker account; it is also the process's client id, as "
        "the county broker binds each account to one (`ingest.<name>` or `api.<name>`).",
    )
    broker_password: SecretStr | None = None
    broker_ca_file: Path | None = None
    broker_admin_password: SecretStr | None = Field(
        default=None,
        description="The broker plugin's admin (`broker sync` only): it changes the accounts.",
    )
    data_dir: Path = Field(
        default=Path("var/cloud"), description="Embedded database, broker and snapshots."
    )
    snapshot_dir: Path | None = Field(default=None, description="Default: data_dir/snapshots.")
    snapshot_url: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="s3://bucket/prefix: snapshots in an S3-compatible store, not snapshot_dir.",
    )
    s3: S3Settings = Field(default_factory=S3Settings)
    public_url: str = Field(
        default="http://127.0.0.1:8080", description="How apps reach this service (snapshot links)."
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    ingest_client_id: str | None = Field(
        default=None,
        description="Fixed per ingest process: its broker session. Default: the broker "
        "username, else gridwatch-ingest-1.",
    )
    ingest_group: str = Field(default="ingest", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    ingest_shared: bool = Field(
        default=True, description="MQTT 5 shared subscription; off for brokers without it."
    )
    ingest_batch_max: Annotated[int, Field(ge=1, le=50_000)] = 5000
    ingest_batch_max_mb: Annotated[int, Field(ge=4, le=512)] = Field(
        default=64,
        description="Bytes of payload in one batch, at most (and three batches' worth "
        "waiting): PostgreSQL takes no statement over 1 GB, and a batch of large messages "
        "(2 MiB snapshots, 256 KB answers) reaches that long before its message count.",
    )
    ingest_batch_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    ingest_node_rate: Annotated[float, Field(ge=0, le=1_000_000)] = Field(
        default=500.0,
        description="Each box's share of ingest, in message units a second (a message is "
        "one unit and one more per 2 KiB): beyond it, and beyond its burst, a box's events, "
        "telemetry and answers are parked and stored when ingest has room, so the boxes "
        "within their share go first. 0: no shares.",
    )
    ingest_node_burst: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=30_000,
        description="Units a box may send at once before its share counts (a busy box "
        "replaying ten minutes offline stays within it).",
    )
    ingest_node_daily_units: Annotated[int, Field(ge=0, le=10_000_000_000)] = Field(
        default=2_000_000,
        description="Units a box may have stored in a county day (CLOUD_TIMEZONE), across "
        "ingest processes: about 23 events a second all day, fifty times a busy town box. "
        "Beyond, its events, telemetry and answers are parked until the next day, so one "
        "box cannot fill the county's disk. 0: no daily limit.",
    )
    ingest_suspend_refused_rate: Annotated[float, Field(ge=0, le=1_000_000)] = Field(
        default=1000.0,
        description="Messages a second one box may send that the county refuses (dead "
        "letters, throttled reports, unasked answers, beyond a full parking), sustained over "
        "CLOUD_INGEST_SUSPEND_WINDOW_S; beyond, the box is suspended (its broker account "
        "disabled by `broker sync --follow`) for CLOUD_INGEST_SUSPEND_S. 0: never.",
    )
    ingest_suspend_window_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    ingest_suspend_parked_rate: Annotated[float, Field(ge=0, le=10_000_000)] = Field(
        default=5000.0,
        description="Units a second of valid messages beyond its share one box may send, "
        "sustained over CLOUD_INGEST_SUSPEND_PARKED_WINDOW_S, before it is suspended like a "
        "box sending junk: far above a box replaying a long outage. 0: never.",
    )
    ingest_suspend_parked_window_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    ingest_suspend_s: Annotated[float, Field(gt=0, le=7 * 86400)] = Field(
        default=600.0, description="How long a box is suspended (an operator may lift it)."
    )
    ingest_node_deferred_max_mb: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1024,
        description="Bytes of one box's messages parked at once, at most; beyond, its "
        "messages are dead letters (cause flood).",
    )
    ingest_reorder_window_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=60.0,
        description="How long seqs may be missing before it is a gap: ingest processes on "
        "a shared subscription each get part of a node's stream, so its seqs commit out of "
        "order. Shorter holes stay with the node's row; longer ones become seq_gaps rows, "
        "detected when first seen. 0 records every gap at once.",
    )
    ingest_max_event_age_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        default=30,
        description="Events observed longer ago than this are dead letters, not stored.",
    )
    ingest_snapshot_wait_s: Annotated[float, Field(ge=0, le=86_400)] = Field(
        default=600.0,
        description="How long a snapshot waits for the event (or command answer) of its node "
        "that lists it; then it is removed, file and row, and counted. Ingest processes on a "
        "shared subscription may get a snapshot before its event.",
    )
    ingest_snapshot_waiting_max_mb: Annotated[int, Field(ge=4, le=1_000_000)] = Field(
        default=64,
        description="Bytes of a box's snapshots that may wait for their events at once (a "
        "few hundred pictures); more are dropped unwritten and counted (reason quota): a "
        "box sending pictures nothing vouches for cannot fill the county's disk.",
    )
    ingest_snapshot_daily_max_mb: Annotated[int, Field(ge=4, le=1_000_000)] = Field(
        default=1024,
        description="Bytes of snapshots one box may send in 24 hours (thousands of pictures; "
        "its own events can vouch for any it sends); more are dropped unwritten and counted "
        "(reason day_quota).",
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        description="The county's time zone: daily buckets start at its midnight.",
    )
    timescale: Literal["auto", "on", "off"] = Field(
        default="auto", description="Use TimescaleDB features when the extension is there."
    )
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    metrics_token: SecretStr | None = Field(
        default=None,
        description="/metrics asks for it as a bearer token (Prometheus `authorization` "
        "config). Unset, /metrics is closed unless CLOUD_METRICS_OPEN.",
    )
    metrics_open: bool = Field(
        default=False,
        description="/metrics without a token, for a scraper on a closed network (the "
        "figures name units, boxes and queues).",
    )

    def metrics_refusal(self, authorization: str) -> str | None:
        """Why a scrape with this Authorization header is refused, or None."""
        if self.metrics_token is not None:
            given = authorization.removeprefix("Bearer ").encode()
            if hmac.compare_digest(given, self.metrics_token.get_secret_value().encode()):
                return None
            return "metrics need the bearer token (CLOUD_METRICS_TOKEN)"
        if self.metrics_open:
            return None
        return "metrics are closed: set CLOUD_METRICS_TOKEN, or CLOUD_METRICS_OPEN=true"

    ingest_metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        default=None,
        description="A separate `gridwatch cloud ingest` serves /metrics and /readyz on this "
        "port (on CLOUD_HOST); `serve --ingest` shows ingest's on its own /metrics and /readyz.",
    )
    web_vendor_dir: Path | None = Field(
        default=None,
        description="node_modules with the operations page's libraries (ECharts), served "
        "locally; default: the repository's, installed from npm by `make setup`.",
    )

    case_rules_file: Path | None = Field(
        default=None,
        description="YAML: a new database's first case rules (which kinds open cases, "
        "deadlines); default built in. After that, `gridwatch cloud rules set` changes them.",
    )
    case_timer_interval_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=5.0, description="How often the service checks escalation and reminders."
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Signs access tokens; unset: keys kept in the database, rotated with "
        "`gridwatch cloud keys rotate`.",
    )
    jwt_previous_secret: SecretStr | None = Field(
        default=None,
        description="The secret before CLOUD_JWT_SECRET, still accepted (its tokens live on "
        "until they expire): a rotation that signs nobody out.",
    )
    access_token_s: Annotated[int, Field(ge=60, le=86400)] = Field(
        default=3600, description="Lifetime of an access token from the login endpoint."
    )
    webhook_attempts: Annotated[int, Field(ge=1, le=50)] = Field(
        default=8, description="Deliveries tried this often before they go to the dead letters."
    )
    webhook_backoff_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0, description="First retry delay; it doubles per attempt, up to an hour."
    )
    webhook_timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        default=10.0, description="A receiver slower than this counts as failed (and retried)."
    )

    @field_validator("jwt_secret", "jwt_previous_secret")
    @classmethod
    def _jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (HS256 needs a 256-bit key)")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must be mqtt://host[:port] or mqtts://host[:port]")
        return value

    @property
    def ingest_client(self) -> str:
        """Ingest's client id: as set, else its account's name (the broker binds them)."""
        return self.ingest_client_id or self.broker_username or "gridwatch-ingest-1"

    @property
    def snapshots_path(self) -> Path:
        return self.snapshot_dir or self.data_dir / "snapshots"
