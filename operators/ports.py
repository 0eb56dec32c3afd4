"""What the pure steps need from outside, as small protocols: facility and shipment directories.

Adapters (PostgreSQL, in sinks/ or api/) implement them; tests pass in-memory fakes. Steps never
import a driver, so they stay pure functions of (value, state, these lookups, a clock).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from models.domain import Facility, ShipmentSnapshot

Clock = Callable[[], datetime]
"""Returns the current time, zoned. Injected so tests freeze it."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@runtime_checkable
class FacilityDirectory(Protocol):
    """Does a facility id exist? Used by `validate` to reject scans at unknown facilities."""

    def exists(self, facility_id: str) -> bool: ...


@runtime_checkable
class FacilityLookup(Protocol):
    """Facility details (name, city, type, position) for ETA features and notifications."""

    def get(self, facility_id: str) -> Facility | None: ...


@runtime_checkable
class ShipmentDirectory(Protocol):
    """The system of record for shipments (PostgreSQL).

    `load` returns None only when the shipment does not exist. A store that cannot answer must
    raise: the step lets the error stop the job (offsets are not committed), it never guesses.
    """

    def load(self, shipment_id: uuid.UUID, before: tuple[int, int] | None = None) -> ShipmentSnapshot | None:
        """`before` = (partition, offset) of the record being processed: a store that knows where
        its rows came from ignores rows written for that record or later ones (an uncommitted
        checkpoint of a crashed process), so a replay rebuilds the committed state.

        A directory may also offer `load_label(shipment_id, before=None)`, same contract, which the
        transition step calls instead for a LABEL_CREATED without stream state (e.g. to read a
        burst of fresh labels in one round trip: sinks/directories.py)."""
        ...


class _CallableFacilities:
    def __init__(self, fn: Callable[[str], bool]) -> None:
        self._fn = fn

    def exists(self, facility_id: str) -> bool:
        return bool(self._fn(facility_id))


def as_facility_directory(obj: FacilityDirectory | Callable[[str], bool]) -> FacilityDirectory:
    """Accept either the protocol or a plain `facility_id -> bool` callable."""
    if isinstance(obj, FacilityDirectory):
        return obj
    if callable(obj):
        return _CallableFacilities(obj)
    raise TypeError(f"expected a FacilityDirectory or a callable, got {type(obj).__name__}")


class InMemoryFacilities:
    """A FacilityDirectory + FacilityLookup over a dict; for tests and the local driver."""

    def __init__(self, facilities: dict[str, Facility] | list[Facility] | None = None) -> None:
        items = facilities.values() if isinstance(facilities, dict) else (facilities or [])
        self._by_id = {f.facility_id: f for f in items}

    def add(self, facility: Facility) -> None:
        self._by_id[facility.facility_id] = facility

    def exists(self, facility_id: str) -> bool:
        return facility_id in self._by_id

    def get(self, facility_id: str) -> Facility | None:
        return self._by_id.get(facility_id)


class InMemoryShipments:
    """A ShipmentDirectory over a dict; for tests and the local driver. Counts loads."""

    def __init__(self, snapshots: list[ShipmentSnapshot] | None = None) -> None:
        self._by_id = {s.shipment_id: s for s in snapshots or []}
        self.loads: list[uuid.UUID] = []

    def add(self, snapshot: ShipmentSnapshot) -> None:
        self._by_id[snapshot.shipment_id] = snapshot

    def load(self, shipment_id: uuid.UUID, before: tuple[int, int] | None = None) -> ShipmentSnapshot | None:
        self.loads.append(shipment_id)
        return self._by_id.get(shipment_id)
