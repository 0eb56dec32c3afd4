"""Rule-based ETA: business days across weekends and holidays, service levels, terminal states."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from models.domain import EventType, ServiceLevel, Status
from models.eta import load_estimator
from models.eta.base import EtaRequest
from models.eta.rules import BusinessCalendar, RuleConfig, RuleEstimator

NY = ZoneInfo("America/New_York")


def req(at: datetime, *, level: ServiceLevel = ServiceLevel.STANDARD, status: Status = Status.IN_TRANSIT,
        event: EventType = EventType.ARRIVAL, hub: datetime | None = None) -> EtaRequest:
    return EtaRequest(shipment_id="s1", service_level=level, status=status, event_type=event, event_at=at,
                      shipment_created_at=at - timedelta(days=1), last_hub_scan_at=hub)


@pytest.fixture(scope="module")
def us() -> BusinessCalendar:
    return BusinessCalendar("US")


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2024, 7, 1), 2, date(2024, 7, 3)),    # Mon + 2 = Wed
        (date(2024, 7, 3), 2, date(2024, 7, 8)),    # Wed + 2 skips Thu 4 July and the weekend
        (date(2024, 7, 5), 1, date(2024, 7, 8)),    # Fri + 1 = Mon
        (date(2024, 7, 6), 2, date(2024, 7, 9)),    # Sat counts from Fri: Mon, Tue
        (date(2024, 7, 7), 1, date(2024, 7, 8)),    # Sun + 1 = Mon
        (date(2024, 5, 24), 2, date(2024, 5, 29)),  # Fri before Memorial Day (Mon 27) -> Wed
        (date(2024, 5, 27), 1, date(2024, 5, 28)),  # on the holiday itself -> next business day
        (date(2024, 12, 24), 2, date(2024, 12, 27)),  # Christmas Day skipped
        (date(2024, 12, 31), 1, date(2025, 1, 2)),  # across the year and New Year's Day
        (date(2024, 7, 1), 0, date(2024, 7, 1)),
    ],
)
def test_business_days_across_weekends_and_holidays(us: BusinessCalendar, start: date, n: int, expected: date) -> None:
    assert us.add_one(start, n) == expected


def test_country_is_configurable() -> None:
    br = BusinessCalendar("BR")
    # Tiradentes (21 April) is a Brazilian holiday, not a US one.
    assert not br.is_business_day(date(2023, 4, 21))
    assert BusinessCalendar("US").is_business_day(date(2023, 4, 21))
    assert br.add_one(date(2023, 4, 20), 1) == date(2023, 4, 24)


def test_standard_is_latest_hub_scan_plus_two_business_days() -> None:
    est = RuleEstimator()
    scan = datetime(2024, 7, 8, 9, 30, tzinfo=NY)   # Monday
    hub = datetime(2024, 7, 5, 22, 0, tzinfo=NY)    # Friday night hub scan
    [eta] = est.estimate([req(scan, hub=hub)])
    assert eta.source == "rule"
    assert eta.at == datetime(2024, 7, 9, 18, 0, tzinfo=NY)  # Fri + 2 business days = Tue
    assert eta.low is not None and eta.high is not None and eta.low <= eta.at <= eta.high
    assert eta.model_version and eta.model_version.startswith("rule")
    [no_hub] = est.estimate([req(scan)])
    assert no_hub.at == datetime(2024, 7, 10, 18, 0, tzinfo=NY)  # from the scan itself: Mon + 2 = Wed


def test_hub_scan_in_another_zone_counts_in_the_scan_zone() -> None:
    scan = datetime(2024, 7, 8, 9, 30, tzinfo=NY)
    hub = datetime(2024, 7, 6, 2, 0, tzinfo=UTC)  # Friday 22:00 in New York
    [eta] = RuleEstimator().estimate([req(scan, hub=hub)])
    assert eta.at is not None and eta.at.date() == date(2024, 7, 9)


def test_service_levels_are_configurable() -> None:
    cfg = RuleConfig.from_dict({"days": {"express": 1, "overnight": 1, "economy": 6}, "country": "US"})
    est = RuleEstimator(cfg)
    scan = datetime(2024, 7, 2, 10, tzinfo=NY)  # Tuesday before 4 July
    got = est.estimate([req(scan, level=lvl) for lvl in
                        (ServiceLevel.EXPRESS, ServiceLevel.OVERNIGHT, ServiceLevel.STANDARD, ServiceLevel.ECONOMY)])
    assert [e.at.date() for e in got if e.at] == [date(2024, 7, 3), date(2024, 7, 3), date(2024, 7, 5),
                                                  date(2024, 7, 11)]
    with pytest.raises(ValueError):
        RuleConfig.from_dict({"days": {"teleport": 0}})
    with pytest.raises(ValueError):
        RuleConfig.from_dict({"dayz": {}})


@pytest.mark.parametrize("status", [Status.DELIVERED, Status.RETURN_TO_SENDER])
def test_terminal_statuses_have_no_eta(status: Status) -> None:
    [eta] = RuleEstimator().estimate([req(datetime(2024, 7, 2, tzinfo=NY), status=status,
                                          event=EventType.DELIVERED)])
    assert eta.at is None and eta.source == "rule"


def test_out_for_delivery_is_today_even_on_a_weekend() -> None:
    sat = datetime(2024, 7, 6, 8, tzinfo=NY)
    [eta] = RuleEstimator().estimate([req(sat, status=Status.OUT_FOR_DELIVERY, event=EventType.OUT_FOR_DELIVERY)])
    assert eta.at == datetime(2024, 7, 6, 18, tzinfo=NY)


def test_bad_rows_do_not_raise_and_keep_order() -> None:
    good = req(datetime(2024, 7, 1, 9, tzinfo=NY))
    naive = req(datetime(2024, 7, 1, 9))            # naive: read as UTC, not rejected
    broken = EtaRequest(shipment_id="x", service_level=ServiceLevel.STANDARD, status=Status.IN_TRANSIT,
                        event_type=EventType.ARRIVAL, event_at=None, shipment_created_at=None)  # type: ignore[arg-type]
    out = RuleEstimator().estimate([good, broken, naive])
    assert len(out) == 3
    assert out[0].at is not None and out[1].at is None and out[2].at is not None
    assert all(e.source == "rule" for e in out)


def test_load_estimator_without_model_is_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    est = load_estimator({"model_path": str(tmp_path / "absent"), "rules": {"country": "US"}})
    assert isinstance(est, RuleEstimator)
    [eta] = est.estimate([req(datetime(2024, 7, 1, 9, tzinfo=NY))])
    assert eta.source == "rule" and eta.at is not None
