"""Synthetic carrier traffic: a US facility network, whole days of scan events, and a Kafka producer.

Network in (config/facilities/us_network.csv), scan-event messages out, plus the exact outcome the
scan pipeline must reach for them. `facilities` and `day` are pure; only `produce` talks to Kafka.
"""

from simulator.day import (
    DayKnobs,
    Outcome,
    SimDay,
    SimMessage,
    SimShipment,
    accepted_counts,
    ending_before,
    expected_final,
    generate_day,
    random_shipments,
)
from simulator.facilities import (
    Facility,
    Network,
    haversine_km,
    load_network,
    nearest_delivery_station,
    route,
)

__all__ = [
    "DayKnobs",
    "Facility",
    "Network",
    "Outcome",
    "SimDay",
    "SimMessage",
    "SimShipment",
    "accepted_counts",
    "ending_before",
    "expected_final",
    "generate_day",
    "haversine_km",
    "load_network",
    "nearest_delivery_station",
    "random_shipments",
    "route",
]
