"""Topology lint: every problem names the file, the line, the step and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from operators.registry import Registry, RegistryError, StepConfig, load_components
from topologies.lint import Problem, TopologyError, lint_file, lint_text, load_topology

ROOT = Path(__file__).resolve().parents[2]
SCAN_PIPELINE = ROOT / "topologies" / "scan_pipeline.yaml"

BASE = """\
name: t-pipeline
app:
  consumer_group: t-pipeline
  processing_guarantee: exactly-once
input:
  topic: scan-events
dead_letter:
  topic: scan-events-dlq
steps:
  - id: validate
    use: validate
    with:
      max_payload_bytes: 4096
  - id: transition
    use: transition
  - id: persist
    use: memory_sink
  - id: normalize
    use: normalize_event
outputs:
  - topic: notifications
    key: shipment_id
"""


class MemoryConfig(StepConfig):
    capacity: int = Field(default=10, ge=1)


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = load_components().copy()

    @reg.sink("memory_sink", config=MemoryConfig)
    def memory_sink(ctx: object, config: MemoryConfig) -> None:
        """Keep written records in memory (tests only)."""

    return reg


def lint(tmp_path: Path, text: str, registry: Registry) -> list[Problem]:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return lint_file(path, registry)


def only(problems: list[Problem]) -> Problem:
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) == 1, [str(p) for p in problems]
    return errors[0]


def test_the_base_file_is_clean(tmp_path: Path, registry: Registry) -> None:
    assert lint(tmp_path, BASE, registry) == []


def test_the_shipped_scan_pipeline_is_clean_with_the_real_registry() -> None:
    assert [str(p) for p in lint_file(SCAN_PIPELINE)] == []
    spec = load_topology(SCAN_PIPELINE)
    assert [s.use for s in spec.steps] == [
        "validate",
        "transition",
        "cassandra_tracking_events",
        "eta_enrich",
        "postgres_shipments",
        "normalize_event",
    ]
    assert spec.app.processing_guarantee == "exactly-once"
    assert (spec.input.topic, spec.dead_letter and spec.dead_letter.topic, spec.outputs[0].topic) == (
        "scan-events",
        "scan-events-dlq",
        "notifications",
    )


def test_unknown_operator(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE.replace("use: transition", "use: transiton"), registry))
    assert (p.step, p.field, p.line) == ("transition", "use", 15)
    assert "unknown operator or sink 'transiton'" in p.message
    assert "did you mean 'transition'" in p.message
    assert str(p).startswith(f"{tmp_path / 'topology.yaml'}:15: step 'transition': field 'use': ")


def test_unknown_top_level_key(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE + "retries: 3\n", registry))
    assert (p.step, p.field, p.line) == (None, "retries", 23)
    assert p.message == "unknown key 'retries'"


def test_unknown_key_in_a_step(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("    use: transition\n", "    use: transition\n    stateful: true\n")
    p = only(lint(tmp_path, text, registry))
    assert (p.step, p.field, p.line) == ("transition", "stateful", 16)
    assert p.message == "unknown key 'stateful'"


def test_unknown_knob(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("max_payload_bytes: 4096", "max_payload_byte: 4096")
    p = only(lint(tmp_path, text, registry))
    assert (p.step, p.field, p.line) == ("validate", "with.max_payload_byte", 13)
    assert "unknown knob 'max_payload_byte' for validate" in p.message
    assert "max_payload_bytes" in p.message  # the knobs it does take


def test_bad_knob_value(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("max_payload_bytes: 4096", "max_payload_bytes: lots")
    p = only(lint(tmp_path, text, registry))
    assert (p.step, p.field, p.line) == ("validate", "with.max_payload_bytes", 13)
    assert p.message.startswith("bad knob for validate:")


def test_bad_nested_knob(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace(
        "    use: transition\n",
        "    use: transition\n    with:\n      attempt_policy:\n        max_attempts: 0\n",
    )
    p = only(lint(tmp_path, text, registry))
    assert (p.step, p.field, p.line) == ("transition", "with.attempt_policy.max_attempts", 18)


def test_bad_knob_of_a_sink(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("    use: memory_sink\n", "    use: memory_sink\n    with: {capacity: 0}\n")
    p = only(lint(tmp_path, text, registry))
    assert (p.step, p.field) == ("persist", "with.capacity")


def test_missing_dead_letter_topic(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("dead_letter:\n  topic: scan-events-dlq\n", "")
    p = only(lint(tmp_path, text, registry))
    assert p.field == "dead_letter.topic"
    assert "missing dead-letter topic" in p.message
    assert "validate, transition, normalize" in p.message


def test_duplicate_step_id(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("  - id: normalize\n", "  - id: validate\n")
    p = only(lint(tmp_path, text, registry))
    assert (p.step, p.field, p.line) == ("validate", "id", 18)
    assert "duplicate step id 'validate' (first used at line 10)" in p.message


def test_step_id_format(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE.replace("- id: persist", "- id: Persist-Events"), registry))
    assert (p.step, p.field, p.line) == ("Persist-Events", "id", 16)


def test_missing_use(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE.replace("    use: transition\n", ""), registry))
    assert (p.step, p.field) == ("transition", "use")
    assert p.message == "required key is missing"


def test_a_step_without_id_is_named_by_position(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE.replace("  - id: transition\n    use:", "  - use:"), registry))
    assert (p.step, p.field) == ("#2", "id")


def test_at_least_once_with_sinks_and_outputs(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("exactly-once", "at-least-once")
    p = only(lint(tmp_path, text, registry))
    assert (p.field, p.line) == ("app.processing_guarantee", 4)
    assert "must run exactly-once" in p.message and "persist" in p.message


def test_at_least_once_is_fine_without_sinks(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("exactly-once", "at-least-once").replace(
        "  - id: persist\n    use: memory_sink\n", ""
    )
    assert lint(tmp_path, text, registry) == []


def test_bad_app_setting(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE.replace("exactly-once", "exactly-twice"), registry))
    assert (p.step, p.field, p.line) == (None, "app.processing_guarantee", 4)


def test_busy_commit_interval_must_not_be_shorter(tmp_path: Path, registry: Registry) -> None:
    text = BASE.replace("exactly-once\n", "exactly-once\n  commit_interval: 0.5\n  busy_commit_interval: 0.2\n")
    p = only(lint(tmp_path, text, registry))
    assert p.field == "app"
    assert "busy_commit_interval (0.2 s) must not be shorter than commit_interval (0.5 s)" in p.message
    ok = BASE.replace("exactly-once\n", "exactly-once\n  commit_interval: 0.1\n  busy_commit_interval: 0.25\n")
    assert lint(tmp_path, ok, registry) == []


def test_topics_must_not_loop(tmp_path: Path, registry: Registry) -> None:
    problems = lint(tmp_path, BASE.replace("- topic: notifications", "- topic: scan-events"), registry)
    p = only(problems)
    assert p.field == "outputs.0.topic" and "loop" in p.message
    p = only(lint(tmp_path, BASE.replace("topic: scan-events-dlq", "topic: notifications"), registry))
    assert p.field == "dead_letter.topic"


def test_illegal_topic_name(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE.replace("topic: scan-events\n", "topic: scan events\n"), registry))
    assert (p.field, p.line) == ("input.topic", 6)


def test_yaml_syntax_error_names_the_line(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, BASE.replace("  - id: persist", "  - id: [persist"), registry))
    assert p.line is not None and p.line >= 16
    assert p.message.startswith("invalid YAML")


def test_top_level_must_be_a_mapping(tmp_path: Path, registry: Registry) -> None:
    p = only(lint(tmp_path, "- just\n- a list\n", registry))
    assert "mapping" in p.message


def test_many_problems_are_all_reported_at_once(tmp_path: Path, registry: Registry) -> None:
    text = (
        BASE.replace("use: transition", "use: nope")
        .replace("max_payload_bytes: 4096", "max_payload_bytes: -1")
        .replace("  - id: normalize\n", "  - id: persist\n")
    )
    problems = lint(tmp_path, text, registry)
    assert {(p.step, p.field) for p in problems} == {
        ("transition", "use"),
        ("validate", "with.max_payload_bytes"),
        ("persist", "id"),
    }


def test_load_topology_raises_with_every_error(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BASE.replace("use: transition", "use: nope").replace("4096", "x"))
    with pytest.raises(TopologyError) as info:
        load_topology(path, registry)
    assert len(info.value.problems) == 2
    assert "bad.yaml:15: step 'transition': field 'use'" in str(info.value)


def test_writes_nothing_is_a_warning(registry: Registry) -> None:
    text = BASE.replace("  - id: persist\n    use: memory_sink\n", "").split("outputs:")[0]
    problems = lint_text(text, "inline.yaml", registry)
    assert [p.severity for p in problems] == ["warning"]
    assert str(problems[0]).startswith("inline.yaml:9: field 'outputs': warning: ")


def test_missing_file() -> None:
    p = only(lint_file("/nonexistent/topology.yaml"))
    assert p.file == "/nonexistent/topology.yaml" and "cannot read" in p.message


# --- the registry rules lint relies on --------------------------------------------------------------


def test_registry_refuses_configs_that_allow_unknown_knobs() -> None:
    from pydantic import BaseModel

    class Loose(BaseModel):
        a: int = 1

    with pytest.raises(RegistryError, match="forbid extra"):
        Registry().operator("loose_step", config=Loose, description="x")(lambda ctx, cfg: None)


def test_registry_refuses_a_second_component_with_the_same_name() -> None:
    reg = Registry()

    def one(ctx: object, cfg: object) -> None:
        """One."""

    def two(ctx: object, cfg: object) -> None:
        """Two."""

    reg.operator("same_name", config=MemoryConfig)(one)
    with pytest.raises(RegistryError, match="already registered"):
        reg.sink("same_name", config=MemoryConfig)(two)


def test_registry_names_and_descriptions() -> None:
    reg = Registry()
    with pytest.raises(RegistryError, match="snake_case"):
        reg.operator("Bad-Name", config=MemoryConfig, description="x")(lambda c, k: None)
    with pytest.raises(RegistryError, match="description"):
        reg.operator("no_doc", config=MemoryConfig)(lambda c, k: None)


def test_command_line_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from topologies.lint import main

    assert main([str(SCAN_PIPELINE)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("use: transition", "use: nope"))
    assert main([str(bad)]) == 1
    assert "bad.yaml:15: step 'transition': field 'use'" in capsys.readouterr().out
