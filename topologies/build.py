"""build: a linted topology spec in, a quixstreams Application + StreamingDataFrame out; `run`
starts it. The only module that knows quixstreams.

Wiring (one StreamingDataFrame, no per-step branches):
  input topic (key and value as raw bytes: a garbage value reaches `validate`, never crashes the
  consumer's deserializer)
  -> each operator step: `sdf.apply(..., metadata=True, stateful=<component>)`; stateful steps
     share the dataframe's one state store, so each step's keys are prefixed "<step_id>:"
     (PrefixedState); a Drop leaves the flow at once (`filter`), a Reject becomes a
     DeadLetterRecord that later steps and sinks pass over
  -> from the first sink step on, the rest of the chain (sinks and stateless steps) runs at
     checkpoint flush on each partition's batch (`FlushTail`, one BatchingSink registered with the
     app's SinkManager): sinks write the batch at once, batch-capable steps such as ETA inference
     run once per batch, and the outputs are produced last, after the sinks succeeded
  -> dead letters of the record-by-record steps go to the dead-letter topic as they happen; those
     of the tail at flush, in the same transaction.

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

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application, message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models.topics import Topic, TopicConfig
from quixstreams.sinks import BatchingSink, SinkBatch

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
    jsonable,
    output_key,
)
from topologies.spec import OutputSpec, TopologySpec

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
    head, tail = split_at_first_sink(compiled.nodes)
    for node in head:
        sdf = sdf.apply(_step_callback(node), stateful=node.stateful, metadata=True)  # type: ignore[call-overload]
        sdf = sdf.filter(_not_dropped)

    final = sdf
    if tail:
        # Everything from the first sink on runs at checkpoint flush, on the batch (FlushTail).
        flush_tail = FlushTail(spec.name, tail, compiled, app, output_topics, dlq_topic)
        sdf.processing_context.sink_manager.register(flush_tail)
        final.filter(_not_dead_letter).update(flush_tail.add_row, metadata=True)  # type: ignore[call-overload]
        output_topics_rowwise: dict[str, Topic] = {}
    else:
        output_topics_rowwise = output_topics

    # The one branch point. Outputs first: the first branch gets the original value, the second a
    # pickled copy; dead letters are rare, so copy for them.
    if output_topics_rowwise:
        published = final.filter(_not_dead_letter).apply(jsonable)
        for output in spec.outputs:
            published.to_topic(output_topics_rowwise[output.topic], key=_key_of(output))
    if dlq_topic is not None:
        # Key: the input record's key (shipment_id, or null for a keyless record).
        final.filter(_is_dead_letter).apply(_envelope).to_topic(dlq_topic)
    else:
        final.filter(_is_dead_letter).update(_no_dead_letter_topic(spec.name))

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
    try:
        built.app.run(count=count, timeout=timeout, collect=False)
    finally:
        if lag is not None:
            lag.stop()


# --- The flush-time tail ------------------------------------------------------------------------


def split_at_first_sink(nodes: list[Any]) -> tuple[list[OperatorNode], list[Any]]:
    """Record-by-record steps before the first sink; the rest runs at checkpoint flush."""
    for i, node in enumerate(nodes):
        if isinstance(node, SinkNode):
            return list(nodes[:i]), list(nodes[i:])
    return list(nodes), []


class FlushTail(BatchingSink):
    """The steps from the first sink on, run at checkpoint flush on each partition's batch.

    Why: the sinks write a checkpoint's batch at once anyway; steps after them (ETA inference,
    normalisation) then see the batch too, so the model runs once per batch, not per row, and the
    outputs are produced *after* the sinks' writes succeeded, inside the checkpoint's Kafka
    transaction (exactly-once), which commits with the input offsets. A sink that raises
    backpressure aborts that transaction: no output of the batch is ever visible.
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

    def __repr__(self) -> str:
        return f"FlushTail({self._topology}: {' -> '.join(n.id for n in self._nodes)})"

    def setup(self) -> None:
        for node in self._nodes:
            if isinstance(node, SinkNode):
                node.sink.setup()

    def add_row(self, value: Any, key: Any, timestamp: int, headers: Any) -> None:
        ctx = message_context()
        self.add(value=value, key=key, timestamp=timestamp, headers=headers, topic=ctx.topic,
                 partition=ctx.partition, offset=ctx.offset)

    def write(self, batch: SinkBatch) -> None:
        items = list(batch)
        values = [i.value for i in items]
        metas = [MessageMeta(topic=batch.topic, partition=batch.partition, offset=i.offset, key=i.key,
                             timestamp_ms=i.timestamp, headers=i.headers) for i in items]
        producer = self._app._producer  # noqa: SLF001 - the checkpoint's transactional producer
        persisted: list[MessageMeta] = []
        for node in self._nodes:
            if isinstance(node, SinkNode):
                sub = SinkBatch(topic=batch.topic, partition=batch.partition)
                for v, m in zip(values, metas, strict=True):
                    sub.append(value=v, key=m.key, timestamp=m.timestamp_ms, headers=m.headers, offset=m.offset)
                node.sink.write(sub)  # SinkBackpressureError propagates: pause, seek back, retry
                persisted = metas
                continue
            results = node.run_batch(values, metas)
            kept_values, kept_metas = [], []
            for r, m in zip(results, metas, strict=True):
                if isinstance(r, DeadLetterRecord):
                    if self._dead_letter is None:
                        raise RuntimeError(f"topology {self._topology!r}: reject without a dead-letter topic")
                    producer.produce(topic=self._dead_letter.name, key=m.key, value=orjson.dumps(r.envelope))
                elif not isinstance(r, Dropped):
                    kept_values.append(r)
                    kept_metas.append(m)
            values, metas = kept_values, kept_metas
        metrics = self._compiled.resources.metrics
        if metrics is not None:
            now_ms = time.time() * 1000
            for m in persisted:
                metrics.persisted((now_ms - m.timestamp_ms) / 1000)
        bodies = [jsonable(v) for v in values]
        for output in self._compiled.outputs:
            topic = self._outputs[output.topic].name
            for body, m in zip(bodies, metas, strict=True):
                producer.produce(topic=topic, key=output_key(body, output, m.key), value=orjson.dumps(body))


# --- Callbacks ----------------------------------------------------------------------------------


def _meta(key: Any, timestamp: int, headers: Any) -> MessageMeta:
    ctx = message_context()
    return MessageMeta(
        topic=ctx.topic,
        partition=ctx.partition,
        offset=ctx.offset,
        key=key,
        timestamp_ms=timestamp,
        headers=headers,
    )


def _step_callback(node: OperatorNode) -> Any:
    if node.stateful:

        def stateful(value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> Any:
            return node.run(value, _meta(key, timestamp, headers), state)

        stateful.__name__ = f"step_{node.id}"
        return stateful

    def stateless(value: Any, key: Any, timestamp: int, headers: Any) -> Any:
        return node.run(value, _meta(key, timestamp, headers), None)

    stateless.__name__ = f"step_{node.id}"
    return stateless


def _not_dropped(value: Any) -> bool:
    return not isinstance(value, Dropped)


def _not_dead_letter(value: Any) -> bool:
    return not isinstance(value, DeadLetterRecord)


def _is_dead_letter(value: Any) -> bool:
    return isinstance(value, DeadLetterRecord)


def _envelope(value: DeadLetterRecord) -> dict[str, Any]:
    return value.envelope


def _key_of(output: OutputSpec) -> Any:
    if output.key is None:
        return None

    def key(value: Any) -> Any:
        return output_key(value, output, None)

    return key


def _no_dead_letter_topic(topology: str) -> Any:
    def fail(value: DeadLetterRecord) -> None:
        # Lint requires a dead-letter topic for any topology with steps; reaching this is a bug.
        raise RuntimeError(
            f"topology {topology!r}: step {value.step!r} rejected a record ({value.reason}) "
            f"but the topology has no dead_letter topic"
        )

    return fail
