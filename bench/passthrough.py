"""Baseline (a): the pass-through topology. A quixstreams app that reads `scan-events` and writes
each record, bytes unchanged, to an output topic, under the scan pipeline's processing guarantee
and Kafka settings (exactly-once, commit_interval 1.0, read_committed, one transaction per
checkpoint, stable transactional.id). No step, no state, no store: what Kafka + quixstreams cost.

    python -m bench.passthrough --group G --state-dir D --output bench-passthrough-out
"""

from __future__ import annotations

import argparse
import logging

from quixstreams import Application

from config.settings import get_settings
from topologies.lint import load_topology


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--output", default="bench-passthrough-out")
    ap.add_argument("--instance-id", default="1")
    ap.add_argument("--topology", default="topologies/scan_pipeline.yaml",
                    help="whose app settings (guarantee, commit interval, timeouts) to copy")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    s = get_settings()
    spec = load_topology(args.topology).app
    app = Application(
        broker_address=s.kafka.bootstrap_servers,
        consumer_group=args.group,
        processing_guarantee=spec.processing_guarantee,
        commit_interval=spec.commit_interval,
        commit_every=spec.commit_every,
        auto_offset_reset=spec.auto_offset_reset,
        state_dir=args.state_dir,
        consumer_extra_config={"isolation.level": "read_committed",
                               "session.timeout.ms": spec.session_timeout_ms,
                               "max.poll.interval.ms": spec.max_poll_interval_ms,
                               "group.instance.id": f"{args.group}-{args.instance_id}"},
        producer_extra_config={"transaction.timeout.ms": 20_000,
                               "transactional.id": f"{args.group}-{args.instance_id}"},
    )
    inp = app.topic(s.kafka.topics["scan_events"], key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    app.dataframe(inp).to_topic(out)
    app.run()


if __name__ == "__main__":
    main()
