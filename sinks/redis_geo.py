"""redis_driver_locations: `Heartbeat` batches in → Redis GEO out: `fleet:{date}` (dispatch search),
`driver:{driver_id}:location` with a short TTL (the tracking page's driver), and one pub/sub message
per moved driver on `live:driver:{driver_id}` (SSE pushes it to the page).

At-least-once is enough here: GEOADD of the same point is idempotent and a replayed batch rewrites
the same positions. One pipeline (one round trip) per checkpoint batch; only each driver's newest
fix of the batch is written, so a burst of heartbeats costs one GEOADD per driver.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson
from pydantic import Field
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from operators.driver_location import Heartbeat
from operators.registry import BuildContext, StepConfig, sink

log = logging.getLogger(__name__)


def fleet_key(day: datetime | str) -> str:
    return f"fleet:{day if isinstance(day, str) else day.strftime('%Y-%m-%d')}"


def driver_key(driver_id: str) -> str:
    return f"driver:{driver_id}:location"


def live_message(hb: Heartbeat) -> bytes:
    """The pub/sub body of a driver move: what the SSE stream forwards (no personal data)."""
    return orjson.dumps({"driver_id": hb.driver_id, "lat": hb.lat, "lng": hb.lng,
                         "recorded_at": hb.recorded_at.isoformat()})


def newest_per_driver(heartbeats: list[Heartbeat]) -> list[Heartbeat]:
    """Each driver's latest fix of a batch (by recorded_at, then arrival order)."""
    latest: dict[str, Heartbeat] = {}
    for hb in heartbeats:
        cur = latest.get(hb.driver_id)
        if cur is None or hb.recorded_at >= cur.recorded_at:
            latest[hb.driver_id] = hb
    return list(latest.values())


def write_positions(pipe: Any, heartbeats: list[Heartbeat], *, driver_ttl_s: int, fleet_ttl_s: int,
                    channel_prefix: str, publish: bool = True) -> None:
    """Queue the writes of one batch on a Redis pipeline (the caller executes it)."""
    fleets: set[str] = set()
    for hb in newest_per_driver(heartbeats):
        fleet = fleet_key(hb.recorded_at)
        fleets.add(fleet)
        pipe.geoadd(fleet, (hb.lng, hb.lat, hb.driver_id))
        key = driver_key(hb.driver_id)
        pipe.geoadd(key, (hb.lng, hb.lat, hb.driver_id))
        pipe.expire(key, driver_ttl_s)
        if publish:
            pipe.publish(channel_prefix + hb.driver_id, live_message(hb))
    for fleet in fleets:
        pipe.expire(fleet, fleet_ttl_s)


class RedisGeoConfig(StepConfig):
    # None: take api.driver_ttl_s / api.fleet_ttl_s from settings (one knob for API and job)
    driver_ttl_s: int | None = Field(default=None, ge=1)
    fleet_ttl_s: int | None = Field(default=None, ge=60)
    publish_live: bool = True
    retry_after_s: float = Field(default=2.0, gt=0)


@sink("redis_driver_locations", config=RedisGeoConfig)
class RedisDriverLocationsSink(BatchingSink):
    """Write each driver's newest GPS fix to Redis GEO (fleet:{date}, driver:{id}:location + TTL)."""

    def __init__(self, ctx: BuildContext, config: RedisGeoConfig) -> None:
        super().__init__()
        settings = ctx.require("settings")
        self._url = settings.redis.url
        self._driver_ttl = config.driver_ttl_s or settings.api.driver_ttl_s
        self._fleet_ttl = config.fleet_ttl_s or settings.api.fleet_ttl_s
        self._prefix = settings.api.live_channel_prefix
        self._publish = config.publish_live
        self._retry_after = config.retry_after_s
        self._client: Any = None

    def setup(self) -> None:
        import redis

        self._client = redis.Redis.from_url(self._url, socket_timeout=10)
        self._client.ping()

    def write(self, batch: SinkBatch) -> None:
        import redis

        heartbeats = [item.value for item in batch if isinstance(item.value, Heartbeat)]
        if not heartbeats:
            return
        pipe = self._client.pipeline(transaction=False)
        write_positions(pipe, heartbeats, driver_ttl_s=self._driver_ttl, fleet_ttl_s=self._fleet_ttl,
                        channel_prefix=self._prefix, publish=self._publish)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("redis unavailable (%s): batch of %d heartbeats retried in %.1f s",
                        exc, len(heartbeats), self._retry_after)
            raise SinkBackpressureError(retry_after=self._retry_after) from exc
