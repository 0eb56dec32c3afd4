"""The engine's core, shared by `build` (quixstreams) and `driver` (no broker): a linted spec and
the start-up resources in, compiled nodes out; one record through one node.

Records flow as plain values. A rejected record becomes a `DeadLetterRecord` that later steps and
sinks pass over untouched and that the end of the chain routes to the dead-letter topic; a
dropped record leaves the flow right after its step.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from models.domain import DeadLetter, DeadLetterSource
from operators.metrics import PipelineMetrics
from operators.ports import Clock
from operators.registry import (
    BuildContext,
    Drop,
    Emit,
    MessageMeta,
    PrefixedState,
    Registry,
    Reject,
    Resources,
    StateLike,
    Step,
    StepContext,
    load_components,
)
from topologies.spec import OutputSpec, TopologySpec

log = logging.getLogger("topologies")

Encoding = Literal["json", "text", "base64"]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A rejected record on its way to the dead-letter topic (envelope of DESIGN.md section 3)."""

    step: str
    reason: str
    envelope: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Dropped:
    step: str
    reason: str


@dataclass
class OperatorNode:
    id: str
    use: str
    stateful: bool
    step: Step
    topology: str
    clock: Clock
    metrics: PipelineMetrics | None
    dead_letter_value_bytes: int
    kind: str = "operator"

    def run(self, value: Any, meta: MessageMeta, state: StateLike | None) -> Any:
        """Run the step on one record; return the next value, a Dropped, or a DeadLetterRecord."""
        if isinstance(value, DeadLetterRecord):
            return value  # rejected upstream: carried to the end of the chain untouched
        step_state = None
        if self.stateful:
            if state is None:
                raise RuntimeError(f"step {self.id!r} is stateful but got no state")
            step_state = PrefixedState(state, self.id)
        started = time.perf_counter()
        outcome = self.step(value, StepContext(message=meta, state=step_state))
        return self._resolve(outcome, value, meta, time.perf_counter() - started)

    def run_batch(self, values: list[Any], metas: list[MessageMeta]) -> list[Any]:
        """Run a stateless step on a checkpoint's batch: one call when the step has `batch()`
        (e.g. ETA inference on an array), else record by record."""
        if self.stateful:
            raise RuntimeError(f"step {self.id!r} is stateful and cannot run at flush time")
        batch = getattr(self.step, "batch", None)
        if batch is None:
            return [self.run(v, m, None) for v, m in zip(values, metas, strict=True)]
        started = time.perf_counter()
        outcomes = batch(values, [StepContext(message=m) for m in metas])
        if len(outcomes) != len(values):
            raise RuntimeError(f"step {self.id!r} returned {len(outcomes)} outcomes for {len(values)} records")
        per_record = (time.perf_counter() - started) / max(len(values), 1)
        return [self._resolve(o, v, m, per_record) for o, v, m in zip(outcomes, values, metas, strict=True)]

    def _resolve(self, outcome: Any, value: Any, meta: MessageMeta, elapsed: float) -> Any:
        if isinstance(outcome, Emit):
            self._count("emit", elapsed)
            return outcome.value
        if isinstance(outcome, Drop):
            self._count("drop", elapsed)
            if self.metrics is not None:
                self.metrics.dropped(self.id, outcome.reason)
            log.debug("dropped step=%s reason=%s key=%s", self.id, outcome.reason, meta.key_text)
            return Dropped(self.id, outcome.reason)
        if isinstance(outcome, Reject):
            self._count("reject", elapsed)
            if self.metrics is not None:
                self.metrics.dead_letter(self.id, outcome.reason)
            log.warning(
                "dead letter topology=%s step=%s reason=%s key=%s source=%s[%d]@%d",
                self.topology,
                self.id,
                outcome.reason,
                meta.key_text,
                meta.topic,
                meta.partition,
                meta.offset,
                extra={"step": self.id, "reason": outcome.reason, "key": meta.key_text},
            )
            return DeadLetterRecord(
                step=self.id,
                reason=outcome.reason,
                envelope=dead_letter_envelope(
                    topology=self.topology,
                    step=self.id,
                    reject=outcome,
                    value=value,
                    meta=meta,
                    failed_at=self.clock(),
                    max_value_bytes=self.dead_letter_value_bytes,
                ),
            )
        # A step returning anything else is a bug: fail loudly rather than commit past it.
        raise TypeError(f"step {self.id!r} returned {type(outcome).__name__}, expected Emit, Drop or Reject")

    def _count(self, outcome: str, elapsed: float) -> None:
        if self.metrics is not None:
            self.metrics.record(self.id, outcome, elapsed)


@dataclass
class SinkNode:
    id: str
    use: str
    sink: Any  # a quixstreams BaseSink; None when compiled without sinks (the local driver)
    kind: str = "sink"


Node = OperatorNode | SinkNode


@dataclass
class CompiledTopology:
    spec: TopologySpec
    nodes: list[Node]
    resources: Resources
    outputs: list[OutputSpec] = field(default_factory=list)

    @property
    def has_stateful(self) -> bool:
        return any(isinstance(n, OperatorNode) and n.stateful for n in self.nodes)


def compile_topology(
    spec: TopologySpec,
    resources: Resources,
    registry: Registry | None = None,
    *,
    build_sinks: bool = True,
) -> CompiledTopology:
    """Instantiate every step (and, when asked, every sink) of a linted spec, in order."""
    reg = registry if registry is not None else load_components()
    dlq_limit = spec.dead_letter.max_value_bytes if spec.dead_letter is not None else 64 * 1024
    nodes: list[Node] = []
    for step in spec.steps:
        component = reg.get(step.use)
        if component is None:  # lint catches this first; keep the message if build is called directly
            raise KeyError(f"topology {spec.name!r}, step {step.id!r}: unknown component {step.use!r}")
        config = component.config.model_validate(step.with_)
        ctx = BuildContext(topology=spec.name, step_id=step.id, use=step.use, resources=resources)
        if component.kind == "sink":
            nodes.append(SinkNode(step.id, step.use, component.factory(ctx, config) if build_sinks else None))
        else:
            nodes.append(
                OperatorNode(
                    id=step.id,
                    use=step.use,
                    stateful=component.stateful,
                    step=component.factory(ctx, config),
                    topology=spec.name,
                    clock=resources.clock,
                    metrics=resources.metrics,
                    dead_letter_value_bytes=dlq_limit,
                )
            )
    return CompiledTopology(spec=spec, nodes=nodes, resources=resources, outputs=list(spec.outputs))


# --- Serialisation at the edges -----------------------------------------------------------------


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"cannot publish a {type(obj).__name__} as JSON")


def jsonable(value: Any) -> Any:
    """A value as plain JSON types (what the output topic's JSON serializer gets)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return orjson.loads(orjson.dumps(value, default=_default))


def serialize(value: Any) -> tuple[Any, bytes]:
    """A published value's JSON bytes and the value its output key is read from. A dict (e.g. a
    normalized event) goes to orjson as it is, in one pass: datetimes, UUIDs and enums come out as
    `jsonable` would write them (RFC 3339, canonical text, the enum's value); anything else is
    made plain first."""
    if isinstance(value, dict):
        return value, orjson.dumps(value, default=_default)
    body = jsonable(value)
    return body, orjson.dumps(body)


def output_key(value: Any, output: OutputSpec, original: Any) -> Any:
    """The Kafka key of a published value: a field of the value, or the input record's key."""
    if output.key is None:
        return original
    if not isinstance(value, dict) or value.get(output.key) is None:
        raise KeyError(f"output {output.topic!r}: the published value has no {output.key!r} field")
    return str(value[output.key]).encode("utf-8")


def dead_letter_envelope(
    *,
    topology: str,
    step: str,
    reject: Reject,
    value: Any,
    meta: MessageMeta,
    failed_at: Any,
    max_value_bytes: int,
) -> dict[str, Any]:
    payload, encoding, truncated = _envelope_value(value, max_value_bytes)
    detail: str | dict[str, Any] = (
        reject.detail if isinstance(reject.detail, str) else jsonable(dict(reject.detail))
    )
    envelope = DeadLetter(
        topology=topology,
        step=step,
        reason=reject.reason,
        detail=detail,
        source=DeadLetterSource(topic=meta.topic, partition=meta.partition, offset=meta.offset),
        key=meta.key_text,
        value=payload,
        value_encoding=encoding,
        value_truncated=truncated,
        failed_at=failed_at,
    )
    return envelope.model_dump(mode="json")


def _envelope_value(value: Any, limit: int) -> tuple[Any, Encoding, bool]:
    """The rejected value as the envelope carries it: parsed JSON when it is JSON, else text, else
    base64; raw values over `limit` bytes are cut."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8", errors="surrogatepass")
    elif value is None:
        return None, "json", False
    else:
        return jsonable(value), "json", False
    truncated = len(raw) > limit
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw[:limit]).decode("ascii"), "base64", truncated
    if truncated:
        return raw[:limit].decode("utf-8", errors="ignore"), "text", True
    try:
        return orjson.loads(raw), "json", False
    except orjson.JSONDecodeError:
        return text, "text", False
