"""describe: a topology spec in, the wired graph as text out (like Kafka Streams'
Topology.describe()): source, processors with their effective knobs and state, sinks, outputs,
and where dead letters go. Built from the spec and the registry only: no broker, no stores.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from operators.registry import ComponentSpec, Registry, load_components
from topologies.lint import load_topology
from topologies.spec import TopologySpec


def describe_file(path: str | Path, registry: Registry | None = None) -> str:
    reg = registry if registry is not None else load_components()
    return describe(load_topology(path, reg), reg, file=str(path))


def describe(spec: TopologySpec, registry: Registry | None = None, *, file: str | None = None) -> str:
    reg = registry if registry is not None else load_components()
    a = spec.app
    lines = [f"Topology: {spec.name}" + (f" - {spec.description.strip()}" if spec.description else "")]
    if file:
        lines.append(f"  file: {file}")
    lines.append(
        f"  app: consumer_group={a.consumer_group} processing_guarantee={a.processing_guarantee} "
        f"commit_interval={a.commit_interval:g}s"
        + (f" (busy: up to {a.busy_commit_interval:g}s above {a.busy_rate:g} records/s)"
           if a.busy_commit_interval is not None else "")
        + f" commit_every={a.commit_every} "
        f"auto_offset_reset={a.auto_offset_reset}"
    )
    dlq = spec.dead_letter.topic if spec.dead_letter else None
    ids = [s.id for s in spec.steps]
    out_names = [f"topic:{o.topic}" for o in spec.outputs]

    lines.append("  Sub-topology: 0")
    lines.append(f"    Source: {spec.input.topic} (topics: [{spec.input.topic}], key: {spec.input.key})")
    lines.append(f"      --> {ids[0]}")

    rejecting: list[str] = []
    at_flush = False  # from the first sink on, steps run at checkpoint flush on the batch (build.FlushTail)
    for i, step in enumerate(spec.steps):
        component = reg.get(step.use)
        nxt = ids[i + 1] if i + 1 < len(ids) else None
        downstream = [nxt] if nxt else out_names
        upstream = ids[i - 1] if i > 0 else spec.input.topic
        if component is None:
            lines.append(f"    Processor: {step.id} (use: {step.use}, UNREGISTERED)")
        elif component.kind == "sink":
            at_flush = True
            lines.append(f"    Sink: {step.id} (use: {step.use}, writes each checkpoint's batch before commit)")
        else:
            state = f'stateful, keys "{step.id}:*" per message key' if component.stateful else "stateless"
            when = ", at checkpoint flush on the batch" if at_flush else ""
            lines.append(f"    Processor: {step.id} (use: {step.use}, {state}{when})")
        if component is not None:
            lines.append(f"      {component.description}")
            knobs = _knobs(component, step.with_)
            if knobs:
                lines.append(f"      with: {knobs}")
            if component.kind == "operator":
                rejecting.append(step.id)
                if component.rejects:
                    lines.append(
                        f"      rejects: {', '.join(component.rejects)} --> {dlq or 'NO DEAD-LETTER TOPIC'}"
                    )
        if downstream:
            lines.append(f"      --> {', '.join(downstream)}")
        lines.append(f"      <-- {upstream}")

    for o in spec.outputs:
        key = f"value.{o.key}" if o.key else "input key"
        lines.append(f"    Sink: topic:{o.topic} (topic: {o.topic}, key: {key}, value: JSON)")
        lines.append(f"      <-- {ids[-1]}")
    if dlq:
        lines.append(f"    Sink: topic:{dlq} (dead letters, key: input key, value: envelope)")
        lines.append(f"      <-- {', '.join(rejecting) or '(no step rejects)'}")
    return "\n".join(lines) + "\n"


def _knobs(component: ComponentSpec, given: dict[str, Any]) -> str:
    try:
        config = component.config.model_validate(given)
    except ValidationError:
        return "INVALID (run lint)"
    values = {name: _plain(getattr(config, name)) for name in type(config).model_fields}
    parts = []
    for name, value in values.items():
        mark = "" if name in given else "*"
        parts.append(f"{name}={_short(value)}{mark}")
    return ", ".join(parts) + ("  (* default)" if any(p.endswith("*") for p in parts) else "")


def _plain(value: Any) -> Any:
    """Knob values for display: enums by value, sets sorted (stable output), models as dicts."""
    if isinstance(value, BaseModel):
        return {k: _plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=str)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return "[" + ", ".join(str(v) for v in value[:4]) + f", ... {len(value)} items]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """`python -m topologies.describe FILE`: print the wired graph (lint errors exit 1)."""
    import sys

    from topologies.lint import TopologyError

    paths = sys.argv[1:] if argv is None else argv
    if len(paths) != 1:
        print("usage: python -m topologies.describe TOPOLOGY.yaml", file=sys.stderr)
        return 2
    try:
        print(describe_file(paths[0]), end="")
    except TopologyError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
