"""The schema of a topology YAML file, and a YAML reader that remembers line numbers.

YAML wires (topics, steps by registry name, knobs); code decides. Knobs under `with:` are
validated against the named component's own Config class by `topologies.lint`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

STEP_ID = r"^[a-z][a-z0-9_]{0,62}$"  # also a metric label and a state-key prefix
TOPIC = r"^[A-Za-z0-9._-]{1,249}$"  # Kafka's legal topic names
TOPOLOGY_NAME = r"^[a-z][a-z0-9-]{0,62}$"
CONSUMER_GROUP = r"^[A-Za-z0-9._-]{1,249}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AppSpec(_Strict):
    consumer_group: str = Field(pattern=CONSUMER_GROUP)
    processing_guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once"
    commit_interval: float = Field(default=1.0, ge=0)  # seconds; 0 commits after every record
    commit_every: int = Field(default=0, ge=0)  # records; 0 = by interval only
    # Checkpoints stretch under load: above `busy_rate` input records/s per process the interval
    # grows in proportion to the rate (commit_interval * rate / busy_rate), up to this. Each
    # checkpoint has a fixed cost (a Kafka transaction, a store statement, the sinks' waits), so
    # a busy process spends less per record and a quiet one keeps the short interval's latency.
    # None: the interval stays commit_interval.
    busy_commit_interval: float | None = Field(default=None, gt=0, le=10.0)
    busy_rate: float = Field(default=1_000.0, gt=0)  # input records/s per process
    # Longest wait for the next record. A checkpoint is only committed between polls, so with a
    # quiet input this bounds how late the last records' checkpoint comes (quixstreams' default: 1 s).
    poll_timeout: float = Field(default=0.1, gt=0, le=5.0)
    auto_offset_reset: Literal["earliest", "latest", "error"] = "earliest"
    # Failure detection of a process that died (kill -9, lost host): its partitions move after this.
    session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    # Longest pause between polls before the process is thought stuck. Under the classic group
    # protocol it is also how long a rebalance waits for a member that died while joining; static
    # membership (`parcel run --instance-id`) lets a restarted process take its place at once.
    max_poll_interval_ms: int = Field(default=60_000, ge=10_000, le=3_600_000)

    @model_validator(mode="after")
    def _busy_not_shorter(self) -> AppSpec:
        if self.busy_commit_interval is not None and self.busy_commit_interval < self.commit_interval:
            raise ValueError(f"busy_commit_interval ({self.busy_commit_interval:g} s) must not be shorter "
                             f"than commit_interval ({self.commit_interval:g} s)")
        return self


class InputSpec(_Strict):
    topic: str = Field(pattern=TOPIC)
    # The value field the Kafka key carries (documentation and describe; validate checks it).
    key: str = "shipment_id"


class DeadLetterSpec(_Strict):
    topic: str = Field(pattern=TOPIC)
    # A rejected raw value larger than this is cut (the envelope says value_truncated).
    max_value_bytes: int = Field(default=64 * 1024, ge=1024, le=900 * 1024)


class StepSpec(_Strict):
    id: str = Field(pattern=STEP_ID)
    use: str = Field(min_length=1)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class OutputSpec(_Strict):
    topic: str = Field(pattern=TOPIC)
    # Field of the published value to use as the Kafka key; None keeps the input record's key.
    key: str | None = None


class TopologySpec(_Strict):
    name: str = Field(pattern=TOPOLOGY_NAME)
    description: str = ""
    app: AppSpec
    input: InputSpec
    dead_letter: DeadLetterSpec | None = None
    steps: list[StepSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(default_factory=list)

    def step(self, step_id: str) -> StepSpec:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


# --- YAML with line numbers ---------------------------------------------------------------------

Path_ = tuple[str | int, ...]


@dataclass
class SourceDoc:
    """A parsed YAML document plus the 1-based line of every mapping key / sequence item."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """Line of `path`, or of its nearest ancestor that exists in the file."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)


class YamlError(ValueError):
    def __init__(self, file: str, line: int | None, message: str) -> None:
        super().__init__(f"{file}:{line or '?'}: {message}")
        self.file = file
        self.line = line
        self.message = message


def read_yaml(text: str, file: str = "<string>") -> SourceDoc:
    """Parse one YAML document with safe semantics and record where each node starts."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlError(file, line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(file, None, f"invalid YAML: {exc}") from None
    doc = SourceDoc(file=file, data=data)
    if node is not None:
        doc.lines[()] = node.start_mark.line + 1
        _walk(node, (), doc.lines)
    return doc


def read_yaml_file(path: str | Path) -> SourceDoc:
    p = Path(path)
    return read_yaml(p.read_text(encoding="utf-8"), file=str(path))


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines)
