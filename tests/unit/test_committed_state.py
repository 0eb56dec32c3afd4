"""State rebuilt after a crash trusts only tracking events written before the replayed record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from sinks.directories import committed_state

T0 = datetime(2026, 11, 20, 8, tzinfo=UTC)


def ev(kind: str, status: str, offset: int | None, hours: float, attempts: int = 0) -> SimpleNamespace:
    return SimpleNamespace(event_id=uuid.uuid4(), event_type=kind, status=status, attempt_count=attempts,
                           created_at=T0 + timedelta(hours=hours), source_partition=3, source_offset=offset)


def test_no_committed_event_means_the_label() -> None:
    assert committed_state([])["status"] == "LABEL_CREATED"
    assert committed_state([])["attempt_count"] == 0


def test_status_follows_source_order_not_scan_time() -> None:
    events = [ev("PICKUP", "PICKED_UP", 10, 1), ev("ARRIVAL", "IN_TRANSIT", 11, 5),
              # an out-of-order scan accepted later (higher offset) with an older device time
              ev("EXCEPTION", "EXCEPTION", 12, 3)]
    state = committed_state(events)
    assert state["status"] == "EXCEPTION"
    assert state["last_event_at"] == T0 + timedelta(hours=5)
    assert state["last_hub_scan_at"] == T0 + timedelta(hours=5)


def test_automatic_return_row_wins_over_its_attempt_row() -> None:
    events = [ev("OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY", 20, 1, 2),
              ev("RETURN_TO_SENDER", "RETURN_TO_SENDER", 21, 2, 3),
              ev("DELIVERY_ATTEMPTED", "DELIVERY_ATTEMPTED", 21, 2, 3)]
    state = committed_state(events)
    assert state["status"] == "RETURN_TO_SENDER"
    assert state["attempt_count"] == 3
