"""One settings model for every job: config/settings.yaml, then PARCEL_* environment overrides.

Environment variables use `__` between levels: PARCEL_KAFKA__BOOTSTRAP_SERVERS=host:9092,
PARCEL_POSTGRES__DSN=..., PARCEL_REDIS__URL=..., PARCEL_CASSANDRA__CONTACT_POINTS='["10.0.0.5"]'.
A file named by PARCEL_CONFIG replaces config/settings.yaml.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_DIR = Path(__file__).resolve().parent
ROOT = CONFIG_DIR.parent
DEFAULT_FILE = CONFIG_DIR / "settings.yaml"


class SettingsError(RuntimeError):
    """A setting is wrong or the server it names cannot be reached; the message names the setting."""


def _hostport(value: str, setting: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{setting}: expected host:port, got {value!r}")
    return host, int(port)


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(default=8, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    topics: dict[str, str] = Field(
        default_factory=lambda: {
            "scan_events": "scan-events",
            "notifications": "notifications",
            "dead_letter": "scan-events-dlq",
            "driver_locations": "driver-locations",
            # customer reschedule choices (notifier flow) -> route re-planning and the ETA
            "reschedules": "reschedule-requests",
        }
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        for item in v.split(","):
            _hostport(item.strip(), "kafka.bootstrap_servers")
        return v


class CassandraSettings(BaseModel):
    contact_points: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    port: int = Field(default=9042, gt=0, lt=65536)
    keyspace: str = Field(default="tracking", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    replication_factor: int = Field(default=1, ge=1)
    local_dc: str = "datacenter1"
    connect_timeout_s: float = 10.0


class PostgresSettings(BaseModel):
    dsn: str = "postgresql://tracking@127.0.0.1:5432/tracking"

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg") or not parts.hostname:
            raise ValueError(f"postgres.dsn: expected postgresql://user@host:port/db, got {v!r}")
        return v

    @property
    def sqlalchemy_url(self) -> str:
        scheme, rest = self.dsn.split("://", 1)
        return f"postgresql+psycopg://{rest}"

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.dsn)
        return parts.hostname or "127.0.0.1", parts.port or 5432


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
            raise ValueError(f"redis.url: expected redis://host:port/db, got {v!r}")
        return v

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 6379


class MetricsSettings(BaseModel):
    port: int = Field(default=9108, ge=0, lt=65536)  # 0 disables the /metrics server


class ApiSettings(BaseModel):
    """The HTTP API and tracking page (api/), and the driver-location job's Redis keys."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, gt=0, lt=65536)
    public_url: str = ""  # base of tracking-page links; default http://{host}:{port}
    # Bearer tokens; in production set them from a secret store: PARCEL_API__DRIVER_KEYS='["..."]'
    driver_keys: list[str] = Field(default_factory=lambda: ["dev-driver-key"])
    operations_keys: list[str] = Field(default_factory=lambda: ["dev-operations-key"])
    public_rate_limit: str = "120/minute"  # slowapi syntax, per client address, on public routes
    rate_limit_storage: str = "memory://"  # per process; redis://127.0.0.1:6379/1 shares it across processes
    tile_url: str = ""  # e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png; empty: offline outline only
    tile_attribution: str = ""
    driver_ttl_s: int = Field(default=120, ge=1)  # driver:{id}:location expires when heartbeats stop
    fleet_ttl_s: int = Field(default=2 * 86400, ge=60)  # fleet:{date} lives a day past its date
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    live_channel_prefix: str = "live:driver:"  # Redis pub/sub channel per driver (SSE driver moves)


class StackSettings(BaseModel):
    """Where `parcel up` keeps server data, logs and downloaded jars (ignored by git)."""

    dir: Path = ROOT / ".stack"
    kafka_version: str = "4.1.1"
    cassandra_version: str = "5.0.6"
    kafka_heap: str = "512m"
    cassandra_heap: str = "1G"
    # Timer slack of Cassandra's threads (prctl PR_SET_TIMERSLACK), µs; 0 keeps the kernel's 50 µs.
    # Its idle request workers sleep-spin in 10 µs steps: 1 ms turned ~11,000 wake-ups/s into ~1,800
    # at 5,000 writes/s (measured), and delays a request that lands on a spinning worker by at most that.
    cassandra_timer_slack_us: int = Field(default=1000, ge=0, le=100_000)
    java_home: Path | None = None  # default: the first JDK 17 found


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARCEL_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    cassandra: CassandraSettings = Field(default_factory=CassandraSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    # Extra sections owned by other parts (eta, notifier, routing) are plain dicts here and
    # validated by their own models where they are used.
    eta: dict[str, Any] = Field(default_factory=dict)
    notifier: dict[str, Any] = Field(default_factory=dict)
    routing: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("PARCEL_CONFIG", DEFAULT_FILE))
        if not path.exists():
            if "PARCEL_CONFIG" in os.environ:
                raise SettingsError(f"PARCEL_CONFIG names {path}, which does not exist")
            return {}
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a mapping at the top level")
        return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from file + environment (+ overrides); errors name the setting, never a traceback."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def check_reachable(setting: str, host: str, port: int, timeout: float = 2.0) -> None:
    """Fail with a message naming `setting` when nothing accepts TCP at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise SettingsError(
            f"{setting}: cannot reach {host}:{port} ({exc.strerror or exc}). "
            f"Is the stack up (`make up`), or is the setting wrong?"
        ) from None


def check_all_reachable(settings: Settings) -> None:
    """One TCP probe per store; raises SettingsError naming the first setting that is wrong."""
    for item in settings.kafka.bootstrap_servers.split(","):
        check_reachable("kafka.bootstrap_servers", *_hostport(item.strip(), "kafka.bootstrap_servers"))
    for cp in settings.cassandra.contact_points:
        check_reachable("cassandra.contact_points", cp, settings.cassandra.port)
    check_reachable("postgres.dsn", *settings.postgres.host_port)
    check_reachable("redis.url", *settings.redis.host_port)
