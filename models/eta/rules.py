"""Rule-based ETA: latest hub scan (or the scan itself) + N business days per service level.

Requests in, one Eta per request out; the answer whenever the model cannot (see model.py). Business
days skip weekends and the configured country's public holidays, counted in the scan's own time zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import holidays
import numpy as np

from models.domain import EventType, ServiceLevel, Status
from models.eta.base import Eta, EtaRequest

RULE_VERSION = "rule-v1"

DEFAULT_DAYS: dict[str, int] = {
    ServiceLevel.OVERNIGHT.value: 1,
    ServiceLevel.EXPRESS.value: 1,
    ServiceLevel.STANDARD.value: 2,
    ServiceLevel.ECONOMY.value: 5,
}


@dataclass(frozen=True)
class RuleConfig:
    """Knobs of the rule estimator (the `rules` section of the ETA config)."""

    country: str = "US"
    subdiv: str | None = None                     # e.g. "CA" for California's own holidays
    days: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DAYS))
    eta_hour: int = 18                            # promised by the end of the business day (local)
    interval_days: tuple[int, int] = (1, 2)       # band: `days - lo` .. `days + hi` business days
    attempt_days: int = 1                         # after a failed attempt / exception: next business day

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> RuleConfig:
        raw = dict(raw or {})
        known = {"country", "subdiv", "days", "eta_hour", "interval_days", "attempt_days"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"eta.rules: unknown keys {sorted(unknown)}")
        days = dict(DEFAULT_DAYS)
        for k, v in (raw.pop("days", None) or {}).items():
            level = ServiceLevel(str(k).upper()).value  # a bad level fails at load time, not per row
            if int(v) < 0:
                raise ValueError(f"eta.rules.days.{k} must be >= 0")
            days[level] = int(v)
        if "interval_days" in raw:
            lo, hi = raw.pop("interval_days")
            raw["interval_days"] = (int(lo), int(hi))
        return cls(days=days, **raw)


class BusinessCalendar:
    """Weekends plus one country's public holidays; vectorised with numpy's busday functions."""

    def __init__(self, country: str = "US", subdiv: str | None = None) -> None:
        self.country = country
        self.subdiv = subdiv
        holidays.country_holidays(country, subdiv=subdiv)  # unknown country -> error at load time
        self._years: tuple[int, int] | None = None
        self._cal: np.busdaycalendar | None = None

    def _calendar(self, lo_year: int, hi_year: int) -> np.busdaycalendar:
        if self._cal is None or self._years is None or lo_year < self._years[0] or hi_year > self._years[1]:
            lo = min(lo_year, self._years[0]) if self._years else lo_year
            hi = max(hi_year, self._years[1]) if self._years else hi_year
            days = holidays.country_holidays(self.country, subdiv=self.subdiv, years=range(lo, hi + 1))
            self._cal = np.busdaycalendar(holidays=np.array(sorted(days.keys()), dtype="datetime64[D]"))
            self._years = (lo, hi)
        return self._cal

    def add(self, days: np.ndarray, n: np.ndarray) -> np.ndarray:
        """`n` business days strictly after each local date (a weekend/holiday date counts from the
        business day before it, so Saturday + 2 is Tuesday and Wednesday + 1 before a holiday
        Thursday is Friday)."""
        days = np.asarray(days, dtype="datetime64[D]")
        if days.size == 0:
            return days
        years = days.astype("datetime64[Y]").astype(int) + 1970
        lo, hi = int(years.min()) - 1, int(years.max()) + 1 + int(np.max(n, initial=0)) // 200
        return np.busday_offset(days, np.asarray(n, dtype=np.int64), roll="backward",
                                busdaycal=self._calendar(lo, hi))

    def add_one(self, d: date, n: int) -> date:
        return self.add(np.array([d], dtype="datetime64[D]"), np.array([n]))[0].astype(date)

    def is_business_day(self, d: date) -> bool:
        arr = np.array([d], dtype="datetime64[D]")
        return bool(np.is_busday(arr, busdaycal=self._calendar(d.year - 1, d.year + 1))[0])


def _aware(d: datetime) -> datetime:
    """Requests should carry zoned times; a naive one is read as UTC rather than rejected."""
    return d if d.tzinfo is not None and d.utcoffset() is not None else d.replace(tzinfo=UTC)


class RuleEstimator:
    """STANDARD = latest hub scan (else the scan) + 2 business days; other levels configurable.

    OUT_FOR_DELIVERY answers the scan's own day; DELIVERY_ATTEMPTED / EXCEPTION at least
    `attempt_days` after the scan; the answer is never before the scan's day. Terminal -> at=None.
    """

    name = "eta_rules"

    def __init__(self, config: RuleConfig | None = None) -> None:
        self.config = config or RuleConfig()
        self.calendar = BusinessCalendar(self.config.country, self.config.subdiv)
        self.version = f"{RULE_VERSION}:{self.config.country}"

    def estimate(self, requests: Sequence[EtaRequest]) -> list[Eta]:
        out: list[Eta | None] = [None] * len(requests)
        rows: list[int] = []
        bases: list[date] = []
        base_n: list[int] = []
        event_days: list[date] = []
        for i, r in enumerate(requests):
            try:
                if r.status in (Status.DELIVERED, Status.RETURN_TO_SENDER):
                    out[i] = Eta(at=None, source="rule", model_version=self.version)
                    continue
                ev = _aware(r.event_at)
                hub = _aware(r.last_hub_scan_at) if r.last_hub_scan_at is not None else None
                ev_day = ev.date()
                base_day = hub.astimezone(ev.tzinfo).date() if hub is not None else ev_day
                n = self.config.days.get(ServiceLevel(r.service_level).value, self.config.days["STANDARD"])
                if r.event_type is EventType.OUT_FOR_DELIVERY or r.status is Status.OUT_FOR_DELIVERY:
                    base_day, n = ev_day, 0
                elif r.status in (Status.DELIVERY_ATTEMPTED, Status.EXCEPTION):
                    base_day, n = ev_day, max(self.config.attempt_days, 0)
                rows.append(i)
                bases.append(base_day)
                base_n.append(n)
                event_days.append(ev_day)
            except Exception:  # a bad row gets an empty rule answer, never an exception
                out[i] = Eta(at=None, source="rule", model_version=self.version)
        if rows:
            self._fill(requests, out, rows, bases, base_n, event_days)
        return [e if e is not None else Eta(at=None, source="rule", model_version=self.version) for e in out]

    def _fill(self, requests: Sequence[EtaRequest], out: list[Eta | None], rows: list[int],
              bases: list[date], base_n: list[int], event_days: list[date]) -> None:
        b = np.array(bases, dtype="datetime64[D]")
        ev_d = np.array(event_days, dtype="datetime64[D]")
        n = np.array(base_n, dtype=np.int64)
        lo_n, hi_n = self.config.interval_days
        at_d = self.calendar.add(b, n)
        lo_d = self.calendar.add(b, np.maximum(n - lo_n, 0))
        hi_d = self.calendar.add(b, n + hi_n)
        # Out-for-delivery means today even on a Sunday: n == 0 keeps the scan's own day.
        zero = n == 0
        at_d = np.where(zero, ev_d, np.maximum(at_d, ev_d))
        lo_d = np.where(zero, ev_d, np.maximum(lo_d, ev_d))
        hi_d = np.maximum(hi_d, at_d)
        hour = time(self.config.eta_hour)
        # datetime64[D] -> datetime.date in one C pass (a numpy scalar per row costs ~10x more)
        at_days, lo_days, hi_days = at_d.tolist(), lo_d.tolist(), hi_d.tolist()
        combine = datetime.combine
        for k, i in enumerate(rows):
            ev = _aware(requests[i].event_at)
            tz = ev.tzinfo
            at = combine(at_days[k], hour, tzinfo=tz)
            low = combine(lo_days[k], hour, tzinfo=tz)
            high = combine(hi_days[k], hour, tzinfo=tz)
            if at < ev:  # late-evening out-for-delivery scan: not before the scan itself
                at = ev + timedelta(hours=1)
                high = max(high, at)
            low = min(low, at)
            out[i] = Eta(at=at, source="rule", low=low, high=high, model_version=self.version)
