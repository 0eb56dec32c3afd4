"""A local driver (Kafka Streams' TopologyTestDriver idea): runs a topology's steps over input
messages without a broker, with dict-backed state per key and in-memory capture of what each sink
would write, what is published and what is dead-lettered.

It compiles the same spec through the same `runtime` nodes as `build`, so a topology that passes
here differs from the deployed one only in quixstreams' plumbing (Kafka, RocksDB, checkpoints).
Sinks are not instantiated: the driver records the values a sink step would receive.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from operators.registry import DictState, MessageMeta, Registry, Resources
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
from topologies.spec import TopologySpec


@dataclass(frozen=True)
class Record:
    key: Any
    value: Any
    topic: str | None = None
    partition: int = 0
    offset: int = 0


@dataclass
class PipeResult:
    """What one input message produced."""

    outputs: dict[str, list[Record]] = field(default_factory=dict)
    sinks: dict[str, list[Record]] = field(default_factory=dict)
    dead_letter: dict[str, Any] | None = None
    dropped: Dropped | None = None


class TopologyTestDriver:
    def __init__(
        self,
        spec: TopologySpec | str | Path,
        resources: Resources,
        registry: Registry | None = None,
    ) -> None:
        if not isinstance(spec, TopologySpec):
            spec = load_topology(spec, registry)
        self.spec = spec
        self.compiled: CompiledTopology = compile_topology(spec, resources, registry, build_sinks=False)
        self._clock = resources.clock
        self._states: dict[Any, DictState] = defaultdict(DictState)
        self._offsets: dict[int, int] = defaultdict(int)
        self.outputs: dict[str, list[Record]] = defaultdict(list)
        self.sinks: dict[str, list[Record]] = defaultdict(list)
        self.dead_letters: list[dict[str, Any]] = []
        self.dropped: list[Dropped] = []

    # Input --------------------------------------------------------------------------------------

    def pipe(
        self,
        value: Any,
        *,
        key: str | bytes | uuid.UUID | None = None,
        timestamp_ms: int | None = None,
        partition: int = 0,
        headers: Any = None,
    ) -> PipeResult:
        """Feed one message. A dict value is JSON-encoded first (as a producer would); bytes and
        str pass as they are. A key is encoded to bytes (the topic's key deserializer is bytes)."""
        raw = orjson.dumps(value) if isinstance(value, dict) else value
        key_bytes = _key_bytes(key)
        if timestamp_ms is None:
            timestamp_ms = int(self._clock().timestamp() * 1000)
        offset = self._offsets[partition]
        self._offsets[partition] += 1
        meta = MessageMeta(
            topic=self.spec.input.topic,
            partition=partition,
            offset=offset,
            key=key_bytes,
            timestamp_ms=timestamp_ms,
            headers=headers,
        )
        return self._process(raw, meta)

    def pipe_all(self, messages: list[dict[str, Any]]) -> list[PipeResult]:
        """Feed many: each item is {"value": ..., "key": ..., "timestamp_ms": ...}."""
        return [self.pipe(m["value"], **{k: v for k, v in m.items() if k != "value"}) for m in messages]

    # Inspection ---------------------------------------------------------------------------------

    def state(self, key: str | bytes | uuid.UUID) -> dict[str, Any]:
        """The raw state of one message key (all steps' prefixed keys)."""
        return self._states[_key_bytes(key)].data

    def output_values(self, topic: str | None = None) -> list[Any]:
        topic = topic or (self.spec.outputs[0].topic if self.spec.outputs else "")
        return [r.value for r in self.outputs.get(topic, [])]

    # The flow -----------------------------------------------------------------------------------

    def _process(self, value: Any, meta: MessageMeta) -> PipeResult:
        result = PipeResult()
        state = self._states[meta.key]
        for node in self.compiled.nodes:
            if isinstance(node, SinkNode):
                if not isinstance(value, DeadLetterRecord):
                    rec = Record(meta.key, value, meta.topic, meta.partition, meta.offset)
                    self.sinks[node.id].append(rec)
                    result.sinks.setdefault(node.id, []).append(rec)
                continue
            assert isinstance(node, OperatorNode)
            value = node.run(value, meta, state if node.stateful else None)
            if isinstance(value, Dropped):
                self.dropped.append(value)
                result.dropped = value
                return result
        if isinstance(value, DeadLetterRecord):
            envelope = _roundtrip(value.envelope)
            self.dead_letters.append(envelope)
            result.dead_letter = envelope
            return result
        if self.compiled.outputs:
            published = _roundtrip(jsonable(value))
            for output in self.compiled.outputs:
                rec = Record(output_key(published, output, meta.key), published, output.topic)
                self.outputs[output.topic].append(rec)
                result.outputs.setdefault(output.topic, []).append(rec)
        return result


def _key_bytes(key: str | bytes | uuid.UUID | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode("utf-8")


def _roundtrip(value: Any) -> Any:
    # What a consumer would read back: proves the value serialises as JSON.
    return orjson.loads(orjson.dumps(value))
