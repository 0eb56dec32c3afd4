"""lint: a topology YAML in, a list of problems out, each naming file, line, step and field.

Checks: YAML syntax; the schema (unknown or missing keys, wrong types); step ids (format,
duplicates); every `use:` resolves through the registry; every knob validates against that
component's Config; a dead-letter topic exists; topics do not loop; a topology that both persists
(sinks) and publishes (outputs) runs exactly-once, so a notification never announces what was
not persisted. `load_topology` is lint + raise, used by build, run and describe.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from operators.registry import Registry, load_components
from topologies.spec import SourceDoc, TopologySpec, YamlError, read_yaml, read_yaml_file


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    line: int | None = None
    step: str | None = None
    field: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}" if self.line else self.file]
        if self.step is not None:
            parts.append(f"step {self.step!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        prefix = "" if self.severity == "error" else "warning: "
        return ": ".join(parts) + ": " + prefix + self.message


class TopologyError(ValueError):
    """A topology file has errors; `problems` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("invalid topology:\n" + "\n".join(f"  {p}" for p in problems))


def lint_file(path: str | Path, registry: Registry | None = None) -> list[Problem]:
    try:
        doc = read_yaml_file(path)
    except YamlError as exc:
        return [Problem(exc.file, exc.message, line=exc.line)]
    except OSError as exc:
        return [Problem(str(path), f"cannot read file: {exc.strerror or exc}")]
    problems, _ = lint_doc(doc, registry)
    return problems


def lint_text(text: str, file: str = "<string>", registry: Registry | None = None) -> list[Problem]:
    try:
        doc = read_yaml(text, file=file)
    except YamlError as exc:
        return [Problem(exc.file, exc.message, line=exc.line)]
    problems, _ = lint_doc(doc, registry)
    return problems


def load_topology(path: str | Path, registry: Registry | None = None) -> TopologySpec:
    """Read, lint and return the spec; raise TopologyError listing every error."""
    try:
        doc = read_yaml_file(path)
    except YamlError as exc:
        raise TopologyError([Problem(exc.file, exc.message, line=exc.line)]) from None
    problems, spec = lint_doc(doc, registry)
    errors = [p for p in problems if p.severity == "error"]
    if errors or spec is None:
        raise TopologyError(errors)
    return spec


def lint_doc(doc: SourceDoc, registry: Registry | None = None) -> tuple[list[Problem], TopologySpec | None]:
    reg = registry if registry is not None else load_components()
    file = doc.file
    data = doc.data
    if not isinstance(data, dict):
        return [Problem(file, "expected a mapping (name, app, input, steps, ...) at the top level", 1)], None

    steps_value = data.get("steps")
    raw_steps: list[Any] = steps_value if isinstance(steps_value, list) else []
    step_names = {
        i: s["id"] for i, s in enumerate(raw_steps) if isinstance(s, dict) and isinstance(s.get("id"), str)
    }

    def step_label(index: int) -> str:
        return step_names.get(index, f"#{index + 1}")

    problems: list[Problem] = []
    spec: TopologySpec | None = None
    try:
        spec = TopologySpec.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            step = None
            field_path = loc
            if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
                step = step_label(loc[1])
                field_path = loc[2:]
            problems.append(
                Problem(
                    file,
                    _schema_message(err),
                    line=doc.line(loc),
                    step=step,
                    field=".".join(str(p) for p in field_path) or None,
                )
            )

    # Steps: ids, registry names and knobs (checked on the raw steps, so a schema error elsewhere
    # does not hide them).
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            continue
        sid = raw.get("id")
        if isinstance(sid, str):
            if sid in first_seen:
                problems.append(
                    Problem(
                        file,
                        f"duplicate step id {sid!r} (first used at line "
                        f"{doc.line(('steps', first_seen[sid]))}); a step id is the state prefix, "
                        "metric label and dead-letter step, so it must be unique",
                        line=doc.line(("steps", i, "id")),
                        step=sid,
                        field="id",
                    )
                )
            else:
                first_seen[sid] = i
        use = raw.get("use")
        if not isinstance(use, str) or not use:
            continue
        component = reg.get(use)
        if component is None:
            problems.append(
                Problem(
                    file,
                    _unknown_component(use, reg),
                    line=doc.line(("steps", i, "use")),
                    step=step_label(i),
                    field="use",
                )
            )
            continue
        knobs = raw.get("with", {})
        if knobs is None:
            knobs = {}
        if not isinstance(knobs, dict):
            continue  # reported by the schema check
        problems.extend(_knob_problems(doc, i, step_label(i), use, component.config, knobs))

    if spec is not None:
        problems.extend(_cross_checks(doc, spec, reg))
    return problems, spec if not any(p.severity == "error" for p in problems) else None


def _schema_message(err: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}"
    if kind == "missing":
        return "required key is missing"
    return str(err["msg"])


def _unknown_component(use: str, reg: Registry) -> str:
    known = reg.names()
    close = difflib.get_close_matches(use, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown operator or sink {use!r}{hint}; registered: {', '.join(known) or 'none'}"


def _knob_problems(
    doc: SourceDoc, index: int, step: str, use: str, config: type[BaseModel], knobs: dict[str, Any]
) -> list[Problem]:
    try:
        config.model_validate(knobs)
    except ValidationError as exc:
        out = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(config.model_fields)) or "none"
                message = f"unknown knob {loc[-1]!r} for {use} (knobs: {allowed})"
            elif err["type"] == "missing":
                message = f"required knob for {use} is missing"
            else:
                message = f"bad knob for {use}: {err['msg']}"
            out.append(
                Problem(
                    doc.file,
                    message,
                    line=doc.line(("steps", index, "with", *loc)),
                    step=step,
                    field=".".join(("with", *(str(p) for p in loc))),
                )
            )
        return out
    return []


def _cross_checks(doc: SourceDoc, spec: TopologySpec, reg: Registry) -> list[Problem]:
    file = doc.file
    out: list[Problem] = []
    kinds = {s.id: reg.get(s.use) for s in spec.steps}
    operators = [sid for sid, c in kinds.items() if c is not None and c.kind == "operator"]
    sinks = [sid for sid, c in kinds.items() if c is not None and c.kind == "sink"]

    if spec.dead_letter is None and operators:
        out.append(
            Problem(
                file,
                "missing dead-letter topic: steps "
                + ", ".join(operators)
                + " can reject records, and bad input must be dead-lettered, never stop the job"
                " (add dead_letter: {topic: ...})",
                line=doc.line(("dead_letter",)) or 1,
                field="dead_letter.topic",
            )
        )

    input_topic = spec.input.topic
    for i, output in enumerate(spec.outputs):
        if output.topic == input_topic:
            out.append(
                Problem(
                    file,
                    f"output topic {output.topic!r} is the input topic (the topology would loop)",
                    line=doc.line(("outputs", i, "topic")),
                    field=f"outputs.{i}.topic",
                )
            )
    if spec.dead_letter is not None:
        dlq = spec.dead_letter.topic
        clash = {input_topic, *(o.topic for o in spec.outputs)}
        if dlq in clash:
            out.append(
                Problem(
                    file,
                    f"dead-letter topic {dlq!r} must differ from the input and output topics",
                    line=doc.line(("dead_letter", "topic")),
                    field="dead_letter.topic",
                )
            )
    seen_outputs: set[str] = set()
    for i, output in enumerate(spec.outputs):
        if output.topic in seen_outputs:
            out.append(
                Problem(
                    file,
                    f"output topic {output.topic!r} is listed twice",
                    line=doc.line(("outputs", i, "topic")),
                    field=f"outputs.{i}.topic",
                )
            )
        seen_outputs.add(output.topic)

    if sinks and spec.outputs and spec.app.processing_guarantee != "exactly-once":
        out.append(
            Problem(
                file,
                "a topology that persists (sinks: "
                + ", ".join(sinks)
                + ") and publishes (outputs) must run exactly-once: under at-least-once the output"
                " is produced before the sinks flush, so a consumer could hear of a scan that was"
                " never persisted",
                line=doc.line(("app", "processing_guarantee")) or doc.line(("app",)),
                field="app.processing_guarantee",
            )
        )
    if not sinks and not spec.outputs:
        out.append(
            Problem(
                file,
                "the topology writes nothing (no sink step and no outputs)",
                line=doc.line(("steps",)),
                field="outputs",
                severity="warning",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m topologies.lint FILE...`: print every problem; exit 1 when any is an error."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m topologies.lint TOPOLOGY.yaml...", file=sys.stderr)
        return 2
    errors = 0
    for path in paths:
        for problem in lint_file(path):
            print(problem)
            errors += problem.severity == "error"
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
