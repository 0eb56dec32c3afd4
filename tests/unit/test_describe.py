"""describe: the wired graph as text, from the spec and the registry alone (no broker)."""

from __future__ import annotations

from pathlib import Path

from operators.registry import load_components
from topologies.describe import describe, describe_file
from topologies.spec import TopologySpec

SCAN_PIPELINE = Path(__file__).resolve().parents[2] / "topologies" / "scan_pipeline.yaml"


def test_scan_pipeline_graph_in_order() -> None:
    text = describe_file(SCAN_PIPELINE)
    lines = text.splitlines()
    assert lines[0].startswith("Topology: scan-pipeline")
    heads = [ln.strip() for ln in lines if ln.startswith("    ") and not ln.startswith("      ")]
    assert heads == [
        "Source: scan-events (topics: [scan-events], key: shipment_id)",
        "Processor: validate (use: validate, stateless)",
        'Processor: transition (use: transition, stateful, keys "transition:*" per message key)',
        "Sink: persist_events (use: cassandra_tracking_events, writes each checkpoint's batch before commit)",
        "Processor: eta (use: eta_enrich, stateless, at checkpoint flush on the batch)",
        "Sink: persist_shipment (use: postgres_shipments, writes each checkpoint's batch before commit)",
        "Processor: normalize (use: normalize_event, stateless, at checkpoint flush on the batch)",
        "Sink: topic:notifications (topic: notifications, key: value.shipment_id, value: JSON)",
        "Sink: topic:scan-events-dlq (dead letters, key: input key, value: envelope)",
    ]
    assert "processing_guarantee=exactly-once" in lines[2]
    assert "commit_interval=0.1s (busy: up to 0.25s above 1200 records/s)" in lines[2]


def test_edges_knobs_and_dead_letters() -> None:
    text = describe_file(SCAN_PIPELINE)
    block = text.split("Processor: validate")[1].split("Processor: transition")[0]
    assert "--> transition" in block and "<-- scan-events" in block
    assert "max_payload_bytes=65536," in block  # given in the file
    assert "require_key=True*" in block  # a default, marked
    assert "rejects: oversized_payload, malformed_json" in block and "--> scan-events-dlq" in block
    transition = text.split("Processor: transition")[1].split("Sink: persist_events")[0]
    # Sets print sorted, so the output is stable across runs.
    assert (
        "exception_reasons: ['access_denied', 'address_not_found', 'recipient_unavailable', 'refused']"
        in transition
    )
    assert "rejects: invalid_transition, unknown_shipment" in transition
    dlq = text.split("Sink: topic:scan-events-dlq")[1]
    assert "<-- validate, transition, eta, normalize" in dlq


def test_describe_is_deterministic() -> None:
    assert describe_file(SCAN_PIPELINE) == describe_file(SCAN_PIPELINE)


def test_unregistered_components_are_shown_not_hidden() -> None:
    spec = TopologySpec.model_validate(
        {
            "name": "draft",
            "app": {"consumer_group": "draft"},
            "input": {"topic": "in"},
            "steps": [{"id": "validate", "use": "validate"}, {"id": "later", "use": "not_written_yet"}],
        }
    )
    text = describe(spec, load_components())
    assert "Processor: later (use: not_written_yet, UNREGISTERED)" in text
    assert "--> NO DEAD-LETTER TOPIC" in text
