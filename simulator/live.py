"""A simulated carrier day against the live stack: labels (PostgreSQL rows + LABEL_CREATED on
`scan-events`, through the label API), then the day's scans, placed so the last one is sent just
before now. Returns the SimDay, whose `expected` / `kinds` / `reasons` are what the pipeline must
reach — the end-to-end tests and the benchmark assert against them."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from api.labels import Label, emit_labels, new_tracking_number, store_labels
from config.settings import Settings
from simulator.day import DayKnobs, SimDay, ending_before, generate_day, random_shipments
from simulator.facilities import Network
from simulator.produce import ProduceResult, produce


def labels_for(day: SimDay) -> list[Label]:
    return [
        Label(uuid.UUID(s.shipment_id), s.tracking_number, s.service_level, s.origin_facility_id,
              s.destination_facility_id, s.recipient_lat, s.recipient_lng, s.created_at,
              uuid.uuid5(uuid.NAMESPACE_URL, f"recipient:{s.shipment_id}"))
        for s in day.shipments
    ]


def plan_day(n: int, *, seed: int = 0, end: datetime | None = None, **knobs: Any) -> SimDay:
    network = Network.load()
    end = end or datetime.now(UTC)
    ships = random_shipments(network, n, seed=seed, start=end - timedelta(days=6))
    # fresh ids and unguessable tracking numbers, as the label API issues them: the same seed gives
    # the same journeys, never the same shipments twice
    ships = [dataclasses.replace(s, shipment_id=str(uuid.uuid4()), tracking_number=new_tracking_number())
             for s in ships]
    base = DayKnobs(seed=seed, **knobs)
    return generate_day(network, ships, ending_before(network, ships, base, end))


def run_day(settings: Settings, day: SimDay, *, progress: bool = True, rate_per_s: float | None = None,
            restamp: bool = False) -> ProduceResult:
    labels = labels_for(day)
    store_labels(settings, labels, seed=day.knobs.seed)
    emit_labels(settings, labels)
    return produce(day.messages, settings.kafka.bootstrap_servers, settings.kafka.topics["scan_events"],
                   progress=progress, rate_per_s=rate_per_s, restamp=restamp)
