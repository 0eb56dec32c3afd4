"""The benchmark's output reader, run as its own process so its work never shares a GIL with the
paced producer: reads a topic with isolation.level=read_committed from given offsets, and for each
wanted event_id (first record only; a pass-through forwards duplicates too) records

    latency = receive time - send time,  send time = the record's created_at - the event's offset

(with restamp the producer writes created_at = send time, so the offset is 0 for valid scans).
Stops when every wanted event was seen, on SIGTERM, or after --max-seconds; writes <out>.npz
(lat, recv: seconds, epoch) and <out>.json (counts)."""

from __future__ import annotations

import argparse
import json
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition


def _ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--start", required=True, help="JSON {partition: offset}")
    ap.add_argument("--wanted", required=True, help="file: event_id[<TAB>offset seconds] per line")
    ap.add_argument("--out", required=True, help="path prefix of the results")
    ap.add_argument("--max-seconds", type=float, default=3600)
    args = ap.parse_args(argv)

    offsets: dict[str, float] = {}
    for line in Path(args.wanted).read_text().splitlines():
        eid, _, off = line.partition("\t")
        offsets[eid] = float(off) if off else 0.0
    start = {int(p): o for p, o in json.loads(args.start).items()}

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(args.topic, p, o) for p, o in start.items()])
    Path(args.out + ".ready").write_text("1")
    lat: list[float] = []
    recv: list[float] = []
    seen: set[str] = set()
    records = 0
    deadline = time.monotonic() + args.max_seconds
    wanted = len(offsets)
    try:
        while not stop and len(seen) < wanted and time.monotonic() < deadline:
            # Wait for the next record, then take what else has arrived in one call (a timeout-0
            # batch): one Python round trip per fetch, not per record, as the reader shares the two
            # cores with the system it measures. `now` is taken after the batch: never early.
            first = c.poll(0.2)
            if first is None:
                continue
            msgs = [first, *c.consume(1000, 0)]
            now = time.time()
            for msg in msgs:
                if msg.error():
                    continue
                records += 1
                try:
                    v = orjson.loads(msg.value())
                    eid = v["event_id"]
                    created = v["created_at"]
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    continue
                off = offsets.get(eid) if isinstance(eid, str) else None
                if off is None or eid in seen:
                    continue
                seen.add(eid)
                try:
                    lat.append(now - (_ts(created) - off))
                except (TypeError, ValueError):
                    continue
                recv.append(now)
    finally:
        c.close()
        np.savez(args.out + ".npz", lat=np.asarray(lat, dtype=np.float64), recv=np.asarray(recv, dtype=np.float64))
        Path(args.out + ".json").write_text(json.dumps({"records": records, "wanted": wanted, "seen": len(seen)}))


if __name__ == "__main__":
    main()
