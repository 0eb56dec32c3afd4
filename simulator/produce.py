"""Sends simulated messages to Kafka: SimMessages in, delivery-confirmed counts out.

Per-key order survives because the producer is idempotent (retries never reorder or double a
partition's records) and messages are handed over in order. `rate_per_s` paces the sends for
benchmarks; `restamp` then rewrites each scan's created_at to the real send time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from tqdm import tqdm  # type: ignore[import-untyped]

from simulator.day import SimMessage, _fmt
from sinks.stores import kafka_producer_config

DEFAULT_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 20,  # batching: wait up to 20 ms to fill a batch
    "batch.num.messages": 10_000,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 200_000,
    "message.timeout.ms": 120_000,
}


class ProducerLike(Protocol):
    def produce(
        self, topic: str, value: bytes, key: bytes | None = ..., on_delivery: Any = ..., timestamp: int = ...
    ) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


class ProduceError(RuntimeError):
    """Some messages were not acknowledged by the broker; the message says how many and why."""


@dataclass
class ProduceResult:
    sent: int = 0  # handed to the producer
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0  # delivery report with an error, or still queued when flush timed out
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the first few delivery errors
    elapsed_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Restamper:
    """Moves a message's created_at to the send time, keeping its offset from the simulated send
    time (so time_in_future stays in the future) and each key strictly increasing. Duplicates get
    byte-for-byte the value their original was sent with; unparseable values pass unchanged."""

    def __init__(self, now: Callable[[], datetime], duplicate_ids: set[str] | None = None):
        self._now = now
        self._last: dict[bytes, datetime] = {}
        self._dup_ids = duplicate_ids
        self._sent: dict[str, bytes] = {}

    def __call__(self, m: SimMessage) -> bytes:
        if m.kind == "duplicate" and m.event_id in self._sent:
            return self._sent[m.event_id]
        if m.at is None:
            return m.value
        try:
            d = orjson.loads(m.value)
            orig = datetime.fromisoformat(d["created_at"].replace("Z", "+00:00"))
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError):
            return m.value  # not JSON, not an object, or no usable created_at: send as generated
        if orig.tzinfo is None:
            return m.value  # the zone-less invalid_payload case stays zone-less
        now = self._now()
        if m.key is not None:
            last = self._last.get(m.key)
            if last is not None and now <= last:
                now = last + timedelta(microseconds=1)
            self._last[m.key] = now
        d["created_at"] = _fmt(now + (orig - m.at))
        out = orjson.dumps(d)
        if m.kind == "valid" and m.event_id and (self._dup_ids is None or m.event_id in self._dup_ids):
            self._sent[m.event_id] = out
        return out


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def produce(
    messages: Iterable[SimMessage],
    bootstrap_servers: str,
    topic: str,
    progress: bool = True,
    *,
    rate_per_s: float | None = None,
    restamp: bool = False,
    record_timestamps: bool = True,
    config: dict[str, Any] | None = None,
    producer: ProducerLike | None = None,
    flush_timeout_s: float = 120.0,
    raise_on_error: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    pace_tick_s: float = 0.002,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ProduceResult:
    """Produces `messages` in order to `topic` and waits for every delivery report.

    rate_per_s: pace the sends (benchmarks); None sends as fast as the producer takes them. A
    message is never sent before its slot; the pacer sleeps at least `pace_tick_s` and then sends
    every message that fell due meanwhile (at 5,000/s a sleep per message, 0.2 ms apart, costs the
    load generator more CPU than the sends; a scanner fleet's arrivals are bursty anyway).
    restamp: rewrite created_at to the real send time (see Restamper); meant with rate_per_s.
    record_timestamps: set each record's Kafka timestamp (CreateTime) to the message's simulated
    send time `at`, so a validator that judges scan times against the record timestamp sees the
    day as the devices did. Ignored with restamp (the producer's clock is then the send time).
    producer: an already-built producer (tests); otherwise a confluent_kafka.Producer is made from
    DEFAULT_CONFIG + `config` (with the project's partitioner, sinks/stores.py). Raises ProduceError
    when anything failed, unless raise_on_error=False.
    """
    msgs: Sequence[SimMessage] = messages if isinstance(messages, Sequence) else list(messages)
    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive")
    if producer is None:
        # imported here so the pure modules never need it
        from confluent_kafka import Producer  # type: ignore[import-untyped]

        producer = Producer(kafka_producer_config(bootstrap_servers, {**DEFAULT_CONFIG, **(config or {})}))
    result = ProduceResult()

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            result.delivered += 1
        else:
            result.failed += 1
            if len(result.errors) < 20:
                result.errors.append(str(err))

    stamp_records = record_timestamps and not restamp
    stamper = None
    if restamp:
        stamper = Restamper(now, {m.event_id for m in msgs if m.kind == "duplicate" and m.event_id})
    t0 = clock()
    with tqdm(total=len(msgs), unit="msg", desc=topic, disable=not progress, smoothing=0.1) as bar:
        for i, m in enumerate(msgs):
            if rate_per_s is not None:
                wait = t0 + i / rate_per_s - clock()
                if wait > 0:
                    sleep(max(wait, pace_tick_s))
            value = stamper(m) if stamper else m.value
            while True:
                try:
                    if stamp_records and m.at is not None:
                        producer.produce(topic, value=value, key=m.key, on_delivery=on_delivery, timestamp=_ms(m.at))
                    else:
                        producer.produce(topic, value=value, key=m.key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)  # local queue full: serve delivery reports, then retry
            result.sent += 1
            result.by_kind[m.kind] = result.by_kind.get(m.kind, 0) + 1
            producer.poll(0)
            bar.update(1)
        remaining = producer.flush(flush_timeout_s)
    result.elapsed_s = clock() - t0
    if remaining:
        result.failed += remaining
        result.errors.append(f"{remaining} message(s) still queued after {flush_timeout_s}s flush")
    unaccounted = result.sent - result.delivered - result.failed
    if unaccounted > 0:  # a delivery report never came back
        result.failed += unaccounted
    if raise_on_error and result.failed:
        raise ProduceError(
            f"{result.failed} of {result.sent} message(s) to {topic!r} not delivered: {result.errors[:3]}"
        )
    return result


def main(argv: list[str] | None = None) -> None:
    """`python -m simulator.produce --shipments 1000`: one simulated day onto scan-events."""
    from config.settings import get_settings
    from simulator.day import DayKnobs, ending_before, generate_day, random_shipments
    from simulator.facilities import default_network

    kafka = get_settings().kafka
    ap = argparse.ArgumentParser(description="Produce a simulated day of scans to Kafka.")
    ap.add_argument("--shipments", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap-servers", default=kafka.bootstrap_servers)
    ap.add_argument("--topic", default=kafka.topics["scan_events"])
    ap.add_argument("--speedup", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=None, help="messages per second (default: unpaced)")
    ap.add_argument("--restamp", action="store_true", help="created_at = real send time")
    ap.add_argument("--emit-label-created", action="store_true")
    ap.add_argument("--clean", action="store_true", help="no duplicates, invalid or malformed messages")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    net = default_network()
    wall = datetime.now(UTC)
    knobs = DayKnobs(seed=args.seed, speedup=args.speedup, emit_label_created=args.emit_label_created)
    if args.clean:
        knobs = knobs.model_copy(update={"duplicate_share": 0, "invalid_transition_share": 0, "malformed_share": 0})
    # The day ends just before now: no valid scan is from the future, none is weeks old.
    ships = random_shipments(net, args.shipments, seed=args.seed, start=wall)
    day = generate_day(net, ships, ending_before(net, ships, knobs, wall - timedelta(minutes=1)))
    res = produce(
        day.messages,
        args.bootstrap_servers,
        args.topic,
        progress=not args.quiet,
        rate_per_s=args.rate,
        restamp=args.restamp,
    )
    print(
        f"delivered {res.delivered}/{res.sent} to {args.topic} in {res.elapsed_s:.1f}s "
        f"({res.rate_per_s:.0f} msg/s) {res.by_kind}; expected: "
        f"{sum(1 for o in day.expected.values() if o.status == 'DELIVERED')} delivered, "
        f"{sum(1 for o in day.expected.values() if o.status == 'RETURN_TO_SENDER')} returned"
    )


if __name__ == "__main__":
    main()
