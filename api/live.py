"""The live feed of one API process: status changes from Kafka `notifications` and driver moves from
Redis pub/sub `live:driver:*`, fanned out to the SSE streams through asyncio queues.

Why this shape: each API process holds ONE Kafka consumer (a background thread; no consumer group
and no commits, it reads from the end: a live feed, not a job) and ONE Redis pattern subscription,
however many pages are open. A stream subscribes to keys: `tn:{tracking_number}` and, while its
shipment is out for delivery, `driver:{driver_id}`. Scale-out is more API processes, each reading
the same broadcast. A page that missed events (reconnect) gets a fresh snapshot first, so nothing
is lost for the customer even though the feed itself is at-most-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections import defaultdict
from typing import Any

from config.settings import Settings

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # per stream; a slow client drops its oldest pending events, never blocks the feed


class LiveHub:
    def __init__(self, settings: Settings, *, kafka: bool = True, redis: bool = True) -> None:
        self.settings = settings
        self._subs: dict[str, set[asyncio.Queue[tuple[str, dict[str, Any]]]]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis_task: asyncio.Task[None] | None = None
        self._want_kafka, self._want_redis = kafka, redis
        self.kafka_ready = threading.Event()
        self.redis_ready = asyncio.Event()
        self.delivered = 0

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._want_kafka:
            self._thread = threading.Thread(target=self._consume_notifications, name="live-notifications",
                                            daemon=True)
            self._thread.start()
        if self._want_redis:
            self._redis_task = asyncio.create_task(self._driver_moves())

    async def stop(self) -> None:
        self._stop.set()
        if self._redis_task is not None:
            self._redis_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._redis_task
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until both feeds listen (tests and the benchmark publish only after this)."""
        if self._want_redis:
            await asyncio.wait_for(self.redis_ready.wait(), timeout)
        if self._want_kafka:
            ok = await asyncio.to_thread(self.kafka_ready.wait, timeout)
            if not ok:
                raise TimeoutError("the notifications consumer did not get its partitions")

    @property
    def ready(self) -> bool:
        kafka = not self._want_kafka or self.kafka_ready.is_set()
        return kafka and (not self._want_redis or self.redis_ready.is_set())

    # subscriptions -------------------------------------------------------------------------

    def queue(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        return asyncio.Queue(QUEUE_SIZE)

    def subscribe(self, key: str, q: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self._subs[key].add(q)

    def unsubscribe(self, key: str, q: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(q)
            if not subs:
                self._subs.pop(key, None)

    @property
    def streams(self) -> int:
        return len({id(q) for qs in self._subs.values() for q in qs})

    def dispatch(self, key: str, kind: str, data: dict[str, Any]) -> None:
        """On the event loop: hand (kind, data) to every queue subscribed to `key`."""
        for q in list(self._subs.get(key, ())):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait((kind, data))
            self.delivered += 1

    # feeds ---------------------------------------------------------------------------------

    async def _driver_moves(self) -> None:
        import redis.asyncio as aioredis

        prefix = self.settings.api.live_channel_prefix
        while not self._stop.is_set():
            client = aioredis.Redis.from_url(self.settings.redis.url)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(prefix + "*")
                self.redis_ready.set()
                async for msg in pubsub.listen():
                    if msg.get("type") != "pmessage":
                        continue
                    try:
                        move = json.loads(msg["data"])
                        self.dispatch(f"driver:{move['driver_id']}", "driver", move)
                    except (ValueError, KeyError, TypeError):
                        log.warning("ignored a malformed live driver message on %s", msg.get("channel"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarted: resubscribe after a pause, keep serving streams
                log.warning("live driver feed lost (%s); resubscribing", exc)
                self.redis_ready.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()

    def _consume_notifications(self) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        topic = self.settings.kafka.topics["notifications"]
        consumer = Consumer({
            "bootstrap.servers": self.settings.kafka.bootstrap_servers,
            # assign(), not subscribe(): no group membership, no rebalances, no commits
            "group.id": f"api-live-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",  # only what the pipeline committed (persisted)
        })
        try:
            while not self._stop.is_set():
                try:
                    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                    # explicit end offsets (not OFFSET_END, resolved lazily): ready means listening
                    ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                            for p in parts]
                    consumer.assign([TopicPartition(topic, p, e) for p, e in zip(parts, ends, strict=True)])
                    break
                except (KafkaException, KeyError) as exc:
                    log.warning("notifications topic not ready (%s); retrying", exc)
                    self._stop.wait(2.0)
            self.kafka_ready.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                try:
                    note = json.loads(msg.value())
                    tn = note["tracking_number"]
                except (ValueError, KeyError, TypeError):
                    continue
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self.dispatch, f"tn:{tn}", "status", note)
        finally:
            consumer.close()
