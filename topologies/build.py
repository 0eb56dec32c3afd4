"""build: a linted topology spec in, a quixstreams Application + StreamingDataFrame out; `run`
starts it. The only module that knows quixstreams.

Wiring (one StreamingDataFrame, one callback per record, no branches):
  input topic (key and value as raw bytes: a garbage value reaches `validate`, never crashes the
  consumer's deserializer)
  -> `HeadRoute`, one `sdf.update(..., metadata=True, stateful=<any step stateful>)`: runs the
     steps before the first sink in order; stateful steps share the dataframe's one state store,
     so each step's keys are prefixed "<step_id>:" (PrefixedState); a Drop ends the record there,
     a Reject is produced to the dead-letter topic at once
  -> from the first sink step on, the rest of the chain (sinks and stateless steps) runs at
     checkpoint flush on the checkpoint's records (`FlushTail`, one BatchingSink registered with
     the app's SinkManager): batch-capable steps such as ETA inference run once per checkpoint,
     the outputs go into the checkpoint's transaction, and then the sinks write, in YAML order
  -> a topology without sinks produces its outputs record by record.
  Every record goes through the app's producer, so under exactly-once it is part of the
  checkpoint's transaction.

Publish-after-persist: the choice is exactly-once, and lint refuses a topology that has both sink
steps and outputs under at-least-once. Under exactly-once quixstreams produces outputs, dead
letters and state changelogs inside one Kafka transaction per checkpoint, and
`Checkpoint.commit()` flushes every sink (step 1, in YAML order) before it commits that
transaction together with the input offsets (step 4). Consumers read with
isolation.level=read_committed (librdkafka's default; set explicitly here), so a notification
becomes visible only after the Cassandra and PostgreSQL writes of its checkpoint succeeded. If a
sink fails, the transaction is aborted and nothing of the checkpoint is visible; on
`SinkBackpressureError` the partitions are paused, sought back to the checkpoint start and
replayed. A crash between the sink flush and the commit replays the checkpoint: the sinks write
again (they must be idempotent: natural keys, guarded updates) and the outputs are produced again
in a new transaction, so a read_committed consumer still sees each output once.
Under at-least-once the output would be sent by the producer while records are processed, before
the sinks flush: that is why lint rejects it.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application, message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models.topics import Topic, TopicConfig
from quixstreams.sinks import BaseSink, BatchingSink, SinkBatch

from config.settings import Settings, get_settings
from operators.registry import MessageMeta, Registry, Resources, load_components
from topologies.lint import load_topology
from topologies.runtime import (
    CompiledTopology,
    DeadLetterRecord,
    Dropped,
    OperatorNode,
    SinkNode,
    compile_topology,
    output_key,
    serialize,
)
from topologies.spec import TopologySpec

log = logging.getLogger("topologies")


@dataclass
class BuiltTopology:
    spec: TopologySpec
    app: Application
    sdf: StreamingDataFrame
    compiled: CompiledTopology
    input_topic: Topic
    output_topics: dict[str, Topic]
    dead_letter_topic: Topic | None


def build(
    spec: TopologySpec,
    resources: Resources,
    *,
    settings: Settings | None = None,
    registry: Registry | None = None,
    state_dir: str | Path | None = None,
    app_options: dict[str, Any] | None = None,
) -> BuiltTopology:
    """Wire `spec` into a quixstreams Application. Talks to the broker (topic metadata and
    creation happen in `app.topic`), but to no store: sinks connect in their `setup()`."""
    settings = settings or resources.settings or get_settings()
    reg = registry if registry is not None else load_components()
    compiled = compile_topology(spec, resources, reg, build_sinks=True)

    options: dict[str, Any] = {
        "broker_address": settings.kafka.bootstrap_servers,
        "consumer_group": spec.app.consumer_group,
        "processing_guarantee": spec.app.processing_guarantee,
        "commit_interval": spec.app.commit_interval,
        "commit_every": spec.app.commit_every,
        "consumer_poll_timeout": spec.app.poll_timeout,
        "auto_offset_reset": spec.app.auto_offset_reset,
        "state_dir": str(state_dir or settings.stack.dir / "state" / spec.name),
        # Never read another job's aborted or open transaction (librdkafka's default, made explicit).
        "consumer_extra_config": {
            "isolation.level": "read_committed",
            "session.timeout.ms": spec.app.session_timeout_ms,
            "max.poll.interval.ms": spec.app.max_poll_interval_ms,
        },
    }
    extra = dict(app_options or {})
    instance_id = extra.pop("instance_id", None)
    options.update(extra)
    # Short transactions (one checkpoint each): a crashed process's open transaction, which blocks
    # read_committed readers and the group's offset fetch, is aborted by the broker within this.
    options["producer_extra_config"] = {"transaction.timeout.ms": 20_000}
    if instance_id:
        # A stable transactional.id per process: the restarted producer fences its predecessor and
        # aborts its open transaction at once (KIP-447), instead of waiting for the timeout.
        options["producer_extra_config"]["transactional.id"] = f"{options['consumer_group']}-{instance_id}"
        # Static membership (KIP-345): a restarted process with the same id takes its partitions
        # back without a rebalance, and a crash never stalls the group's join phase.
        options["consumer_extra_config"]["group.instance.id"] = f"{options['consumer_group']}-{instance_id}"
    app = Application(**options)

    topic_config = TopicConfig(
        num_partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
    )
    input_topic = app.topic(
        spec.input.topic, key_deserializer="bytes", value_deserializer="bytes", config=topic_config
    )
    dlq_topic = (
        app.topic(
            spec.dead_letter.topic, key_serializer="bytes", value_serializer="json", config=topic_config
        )
        if spec.dead_letter is not None
        else None
    )
    output_topics = {
        o.topic: app.topic(o.topic, key_serializer="bytes", value_serializer="json", config=topic_config)
        for o in spec.outputs
    }

    sdf = app.dataframe(input_topic)
    pacer = None
    if spec.app.busy_commit_interval is not None and spec.app.busy_commit_interval > spec.app.commit_interval:
        gauge = resources.metrics.checkpoint_interval if resources.metrics is not None else None
        pacer = CheckpointPacer(sdf.processing_context, spec.app.commit_interval, spec.app.busy_commit_interval,
                                spec.app.busy_rate, gauge.labels(topology=spec.name) if gauge is not None else None)
        # A sink only for its flush: quixstreams flushes every sink when a checkpoint commits and
        # creates the next checkpoint, with the context's commit_interval, right after.
        sdf.processing_context.sink_manager.register(pacer)
    head, tail = split_at_first_sink(compiled.nodes)
    flush_tail = FlushTail(spec.name, tail, compiled, app, output_topics, dlq_topic) if tail else None
    if flush_tail is not None:
        sdf.processing_context.sink_manager.register(flush_tail)
    # One callback per record runs every head step and routes its result: no per-step filters and
    # no branch (a quixstreams branch pickle-copies every value). Dead letters are produced at
    # once, outputs at once (no sinks) or at checkpoint flush (FlushTail), all through the app's
    # producer, i.e. inside the checkpoint's transaction under exactly-once.
    route = HeadRoute(spec.name, head, compiled, app, output_topics, dlq_topic, flush_tail, pacer)
    sdf = sdf.update(route.stateful if route.has_state else route.stateless, stateful=route.has_state,
                     metadata=True)  # type: ignore[call-overload]

    return BuiltTopology(
        spec=spec,
        app=app,
        sdf=sdf,
        compiled=compiled,
        input_topic=input_topic,
        output_topics=output_topics,
        dead_letter_topic=dlq_topic,
    )


def run(
    path: str | Path,
    *,
    resources: Resources,
    settings: Settings | None = None,
    registry: Registry | None = None,
    state_dir: str | Path | None = None,
    count: int = 0,
    timeout: float = 0.0,
    app_options: dict[str, Any] | None = None,
) -> None:
    """Load, lint, build and run a topology until stopped (SIGTERM/Ctrl+C), or until `count`
    outputs or `timeout` idle seconds (for tests). Metrics: pass `resources.metrics` (a
    PipelineMetrics on the registry that the /metrics endpoint serves)."""
    reg = registry if registry is not None else load_components()
    spec = load_topology(path, reg)
    built = build(
        spec, resources, settings=settings, registry=reg, state_dir=state_dir, app_options=app_options
    )
    log.info("starting topology %s from %s", spec.name, path)
    lag = None
    if resources.metrics is not None:
        from topologies.lag import LagReporter

        bootstrap = (settings or resources.settings or get_settings()).kafka.bootstrap_servers
        lag = LagReporter(bootstrap, built.app.config.consumer_group,
                          built.input_topic.name, resources.metrics)
        lag.start()
    tune_gc()
    try:
        built.app.run(count=count, timeout=timeout, collect=False)
    finally:
        if lag is not None:
            lag.stop()


def tune_gc(gen0: int = 50_000) -> None:
    """Make CPython's cyclic garbage collector cheap for a streaming job.

    Every record allocates a few hundred short-lived objects (dicts, pydantic models, datetimes),
    so with the default gen-0 threshold (700) the collector runs every few records, and each older-
    generation pass walks the whole start-up heap (quixstreams, librdkafka bindings, the Cassandra
    driver, numpy/xgboost and the ETA model): measured on the scan pipeline's operators, ~25% of
    their CPU. `gc.freeze()` moves what exists after start-up into a permanent generation the
    collector never scans, and a larger gen-0 threshold collects young objects in fewer, equally
    cheap passes (the records of a checkpoint die young). Reference counting still frees almost
    everything at once; only reference cycles wait for a pass.
    """
    if os.environ.get("PARCEL_GC_DEFAULTS"):  # escape hatch for comparisons
        return
    gc.collect()
    gc.freeze()
    g0, g1, g2 = gc.get_threshold()
    gc.set_threshold(max(g0, gen0), g1, g2)


# --- The record-by-record head -------------------------------------------------------------------


def split_at_first_sink(nodes: list[Any]) -> tuple[list[OperatorNode], list[Any]]:
    """Record-by-record steps before the first sink; the rest runs at checkpoint flush."""
    for i, node in enumerate(nodes):
        if isinstance(node, SinkNode):
            return list(nodes[:i]), list(nodes[i:])
    return list(nodes), []


class HeadRoute:
    """Runs the head steps on one record and sends the result where it belongs: a dead letter to
    the dead-letter topic, a kept value to the flush-time tail or (no sinks) to the outputs."""

    def __init__(self, topology: str, nodes: list[OperatorNode], compiled: CompiledTopology, app: Application,
                 outputs: dict[str, Topic], dead_letter: Topic | None, tail: FlushTail | None,
                 pacer: CheckpointPacer | None = None) -> None:
        self._topology = topology
        self._pacer = pacer
        self._nodes = nodes
        self._compiled = compiled
        self._app = app
        self._outputs = [(o, outputs[o.topic].name) for o in compiled.outputs]
        self._dead_letter = dead_letter.name if dead_letter is not None else None
        self._tail = tail
        self.has_state = any(n.stateful for n in nodes)

    def stateful(self, value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> None:
        self._route(value, key, timestamp, headers, state)

    def stateless(self, value: Any, key: Any, timestamp: int, headers: Any) -> None:
        self._route(value, key, timestamp, headers, None)

    def _route(self, value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> None:
        if self._pacer is not None:
            self._pacer.records += 1
        ctx = message_context()
        meta = MessageMeta(topic=ctx.topic, partition=ctx.partition, offset=ctx.offset, key=key,
                           timestamp_ms=timestamp, headers=headers)
        for node in self._nodes:
            value = node.run(value, meta, state)
            if isinstance(value, Dropped):
                return
            if isinstance(value, DeadLetterRecord):
                if self._tail is not None:
                    self._tail.add_dead_letter(value, meta)
                else:
                    produce_dead_letter(self._app, self._topology, self._dead_letter, value, meta)
                return
        if self._tail is not None:
            self._tail.add_row(value, meta)
            return
        if self._outputs:
            producer = self._app._producer  # noqa: SLF001 - the checkpoint's (transactional) producer
            body, payload = serialize(value)
            for output, topic in self._outputs:
                producer.produce(topic=topic, key=output_key(body, output, key), value=payload)


def produce_dead_letter(app: Application, topology: str, topic: str | None, record: DeadLetterRecord,
                        meta: MessageMeta) -> None:
    if topic is None:
        # Lint requires a dead-letter topic for any topology with steps; reaching this is a bug.
        raise RuntimeError(f"topology {topology!r}: step {record.step!r} rejected a record ({record.reason}) "
                           f"but the topology has no dead_letter topic")
    # Key: the input record's key (shipment_id, or null for a keyless record).
    app._producer.produce(topic=topic, key=meta.key, value=orjson.dumps(record.envelope))  # noqa: SLF001


class CheckpointPacer(BaseSink):
    """Sets the next checkpoint's interval from the input rate of the one that commits.

    interval = commit_interval * rate / busy_rate, clamped to [commit_interval, busy_commit_interval],
    with rate = records routed since the previous commit / seconds since it. Every checkpoint has a
    fixed cost (a Kafka transaction with its markers, one PostgreSQL statement, the sinks' waits),
    so stretching it under load lowers the cost per record when the CPU is short, and a quiet input
    keeps the short interval (latency). After an idle spell the first commit sees a low rate and
    returns to the short interval. Registered as a sink only to be called at each commit.
    """

    def __init__(self, context: Any, base_s: float, busy_s: float, busy_rate: float, gauge: Any = None,
                 clock: Any = time.monotonic) -> None:
        super().__init__()
        self._context = context
        self._base, self._busy, self._busy_rate = base_s, busy_s, busy_rate
        self._gauge = gauge
        self._clock = clock
        self._since = clock()
        self.records = 0
        self.interval = base_s
        if gauge is not None:
            gauge.set(base_s)

    def add(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - nothing is ever sent to it
        raise RuntimeError("CheckpointPacer takes no records")

    def on_paused(self) -> None:
        pass

    def flush(self) -> None:
        now = self._clock()
        span, self._since = now - self._since, now
        rate = self.records / span if span > 0 else 0.0
        self.records = 0
        self.interval = min(max(self._base * rate / self._busy_rate, self._base), self._busy)
        self._context.commit_interval = self.interval
        if self._gauge is not None:
            self._gauge.set(self.interval)


# --- The flush-time tail ------------------------------------------------------------------------


class FlushTail(BatchingSink):
    """The steps from the first sink on, run at checkpoint flush on the checkpoint's records.

    Why: the sinks write a checkpoint's batch at once anyway; steps after them (ETA inference,
    normalisation) then see the batch too, so the model runs once per checkpoint, not per row.
    The outputs go into the checkpoint's Kafka transaction (exactly-once) before the sinks' writes
    complete, and become visible when quixstreams commits it with the input offsets, after every
    sink flushed. A sink that raises backpressure aborts that transaction: no output of the batch
    is ever visible.

    All partitions of a checkpoint go through in one pass: a sink with `write_records(values,
    metas)` gets them in one call (one PostgreSQL statement per checkpoint, not per partition);
    other BatchingSinks get one SinkBatch per partition. When the first node is a sink with
    `begin(value, meta)`, each record's write starts as the record arrives (Cassandra inserts run
    while the next records are processed) and `write_records` waits for them at flush.
    Stateful steps are not allowed here (lint: state must be updated record by record).
    """

    def __init__(self, topology: str, nodes: list[Any], compiled: CompiledTopology, app: Application,
                 outputs: dict[str, Topic], dead_letter: Topic | None) -> None:
        super().__init__()
        stateful = [n.id for n in nodes if isinstance(n, OperatorNode) and n.stateful]
        if stateful:
            raise ValueError(f"topology {topology!r}: stateful steps {stateful} come after a sink; "
                             f"state is updated record by record, so put them before the first sink")
        self._topology = topology
        self._nodes = nodes
        self._compiled = compiled
        self._app = app
        self._outputs = outputs
        self._dead_letter = dead_letter
        self._values: list[Any] = []
        self._metas: list[MessageMeta] = []
        self._dead: list[tuple[DeadLetterRecord, MessageMeta]] = []
        first = nodes[0] if nodes else None
        self._begin = getattr(first.sink, "begin", None) if isinstance(first, SinkNode) else None

    def __repr__(self) -> str:
        return f"FlushTail({self._topology}: {' -> '.join(n.id for n in self._nodes)})"

    def setup(self) -> None:
        for node in self._nodes:
            if isinstance(node, SinkNode):
                node.sink.setup()

    def add_row(self, value: Any, meta: MessageMeta) -> None:
        self._values.append(value)
        self._metas.append(meta)
        if self._begin is not None:
            self._begin(value, meta)

    def add_dead_letter(self, record: DeadLetterRecord, meta: MessageMeta) -> None:
        """A head step's dead letter: produced at the flush, with the checkpoint's outputs. Produced
        as they came, the dead letters of a 5,000/s stream with a few percent of bad scans trickled
        into the open transaction all checkpoint long, each new partition a request of its own
        (a produce, the client's AddPartitionsToTxn and the broker's verification; ~110 of Kafka's
        ~930 requests/s, docs/bench/pipeline.md)."""
        self._dead.append((record, meta))

    def write(self, batch: SinkBatch) -> None:  # pragma: no cover - flush() below replaces the per-batch path
        raise RuntimeError("FlushTail is flushed whole, never per batch")

    def on_paused(self) -> None:
        """Backpressure elsewhere: this checkpoint is dropped and replayed."""
        self._values, self._metas, self._dead = [], [], []
        for node in self._nodes:
            if isinstance(node, SinkNode) and hasattr(node.sink, "abandon"):
                node.sink.abandon()

    def flush(self) -> None:
        values, metas, dead = self._values, self._metas, self._dead
        self._values, self._metas, self._dead = [], [], []
        try:
            self._dead_letters(dead)
            self._run(values, metas)
        except BaseException:
            for node in self._nodes:
                if isinstance(node, SinkNode) and hasattr(node.sink, "abandon"):
                    node.sink.abandon()
            raise

    def _dead_letters(self, dead: list[tuple[DeadLetterRecord, MessageMeta]]) -> None:
        """Into the checkpoint's transaction (under exactly-once, visible only if it commits); a
        dropped checkpoint forgets them and the replay rejects the same records again."""
        topic = self._dead_letter.name if self._dead_letter else None
        for record, meta in dead:
            produce_dead_letter(self._app, self._topology, topic, record, meta)

    def _run(self, values: list[Any], metas: list[MessageMeta]) -> None:
        """Steps first, then the outputs into the open transaction, then the sinks' writes in order.

        Each sink gets the batch as it is at the sink's place in the chain, but the writes run
        last: the CPU work of the checkpoint (ETA inference, normalisation, serialising and
        producing the outputs) overlaps the writes a `begin` sink started as records arrived, and
        librdkafka sends the outputs while the sinks write. Producing before the writes completed
        is safe only because outputs go into the checkpoint's Kafka transaction (exactly-once; lint
        refuses sinks with outputs under at-least-once): a read_committed consumer sees them when
        quixstreams commits, after every sink's flush returned; a failed or backpressured write
        raises here and the transaction is aborted. The sinks' writes keep their YAML order (the
        TrackingEvent rows complete before the Shipment row is written).
        """
        if not values:
            return
        producer = self._app._producer  # noqa: SLF001 - the checkpoint's transactional producer
        writes: list[tuple[SinkNode, list[Any], list[MessageMeta]]] = []
        for node in self._nodes:
            if isinstance(node, SinkNode):
                writes.append((node, values, metas))
                continue
            results = node.run_batch(values, metas)
            kept_values, kept_metas = [], []
            for r, m in zip(results, metas, strict=True):
                if isinstance(r, DeadLetterRecord):
                    produce_dead_letter(self._app, self._topology,
                                        self._dead_letter.name if self._dead_letter else None, r, m)
                elif not isinstance(r, Dropped):
                    kept_values.append(r)
                    kept_metas.append(m)
            values, metas = kept_values, kept_metas
        if self._compiled.outputs:
            encoded = [serialize(v) for v in values]
            for output in self._compiled.outputs:
                topic = self._outputs[output.topic].name
                for (body, payload), m in zip(encoded, metas, strict=True):
                    producer.produce(topic=topic, key=output_key(body, output, m.key), value=payload)
        persisted: list[MessageMeta] = []
        for node, sink_values, sink_metas in writes:
            write_records = getattr(node.sink, "write_records", None)
            if write_records is not None:
                write_records(sink_values, sink_metas)  # SinkBackpressureError propagates: abort, seek back, retry
            else:
                for sub in _per_partition(sink_values, sink_metas):
                    node.sink.write(sub)
            persisted = sink_metas
        metrics = self._compiled.resources.metrics
        if metrics is not None and persisted:
            now_ms = time.time() * 1000
            metrics.persisted_many([(now_ms - m.timestamp_ms) / 1000 for m in persisted])


def _per_partition(values: list[Any], metas: list[MessageMeta]) -> list[SinkBatch]:
    batches: dict[tuple[str, int], SinkBatch] = {}
    for v, m in zip(values, metas, strict=True):
        b = batches.get((m.topic, m.partition))
        if b is None:
            b = batches[(m.topic, m.partition)] = SinkBatch(topic=m.topic, partition=m.partition)
        b.append(value=v, key=m.key, timestamp=m.timestamp_ms, headers=m.headers, offset=m.offset)
    return list(batches.values())
