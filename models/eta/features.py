"""One feature builder for training (Olist replay) and serving (EtaRequest batches).

Requests -> `Frame` (columns) -> `build_features(frame, tables, history)` -> float32 matrix. Offline
code builds the very same EtaRequest objects (olist.py) and goes through the same three calls, so
training and serving cannot disagree. Static tables come from the training window; the rolling
`History` only ever looks at whole days strictly before the request's day, so a feature never uses
an outcome that was unknown at the request's moment.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np

from models.domain import EventType, ServiceLevel, Status
from models.eta.base import EtaRequest

DAY = 86400.0

EVENT_CODES: dict[str, int] = {e.value: i for i, e in enumerate(EventType)}
STATUS_CODES: dict[str, int] = {s.value: i for i, s in enumerate(Status)}
SERVICE_CODES: dict[str, int] = {s.value: i for i, s in enumerate(ServiceLevel)}
LABEL = EVENT_CODES["LABEL_CREATED"]
PICKUP = EVENT_CODES["PICKUP"]
ARRIVAL = EVENT_CODES["ARRIVAL"]
DELIVERED = EVENT_CODES["DELIVERED"]

# name -> what it is. The artifact stores the subset a model was trained on (its feature list).
FEATURES: dict[str, str] = {
    "origin_zip": "origin zip as a number (5 digits; zip codes are laid out geographically)",
    "dest_zip": "destination zip as a number",
    "origin_lat": "origin latitude (request, else the zip centroid)",
    "origin_lng": "origin longitude",
    "dest_lat": "destination latitude (request, else the zip centroid)",
    "dest_lng": "destination longitude",
    "service_level": "service level code (STANDARD, EXPRESS, OVERNIGHT, ECONOMY)",
    "carrier": "carrier code in the training vocabulary (NaN if unseen)",
    "event_type": "code of the scan the request follows (label, pickup, arrival, ...)",
    "day_of_week": "local day of week of the scan, 0 = Monday",
    "time_of_day": "local hour of the scan, fractional",
    "elapsed_days": "days since the label was created",
    "leg_elapsed_ratio": "time in the current leg (since the last hub scan, else the label) over the "
                         "historical median of that segment (scan type at this facility)",
    "remaining_distance_km": "great-circle km from the current facility (else the origin) to the destination",
    "remaining_stops": "stops left on the delivery route, when the route planner knows them",
    "origin_handling_days": "historical median label -> pickup at this origin facility (shrunk to its region)",
    "route_median_days": "historical median label -> delivery of the carrier-route (region pair), shrunk",
    "route_on_time_rate": "historical share of the carrier-route pair delivered by the promised date",
    "promised_days": "days from the scan to the date promised at purchase (NaN if none)",
    "pickup_due_days": "days from the scan to the origin's hand-over deadline (NaN if none; negative once past)",
    "weight_kg": "declared parcel weight (NaN if unknown)",
    "volume_index": "new shipments in the last 7 days over the weekly mean of the 28 days before",
    "facility_throughput": "inbound scans per day at this facility over the last 7 days",
    "drift_7d": "mean log(actual / route median) of deliveries completed in the last 7 days",
    "pending_7_14": "share of shipments labelled 7-14 days ago not yet delivered (live slowdown signal)",
    "pending_14_28": "share of shipments labelled 14-28 days ago not yet delivered",
    "dest_zip3_delay": "mean log(actual / route median) of the last 90 days' deliveries to this destination "
                       "zip3, shrunk, minus that of all deliveries in the same window (as of the day before)",
    "origin_zip_delay": "the same for deliveries from this origin zip (the shipper)",
    "route_zip3_delay": "the same for deliveries from this origin region to this destination zip3",
    "origin_handling_rel": "mean log(label -> pickup days) at this origin facility over the last 90 days, "
                           "shrunk, minus that of all pickups in the same window (as of the day before)",
    "weather_severity": "extra['weather_severity'] from the pipeline, 0..1 (NaN when absent)",
    "attempt_count": "failed delivery attempts so far",
}


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclass
class Frame:
    """Column view of a batch of requests. `ok` is False for rows that could not be read."""

    n: int
    ok: np.ndarray
    shipment_id: np.ndarray
    event_ts: np.ndarray
    local_offset: np.ndarray
    created_ts: np.ndarray
    leg_start_ts: np.ndarray
    promised_ts: np.ndarray
    pickup_due_ts: np.ndarray
    weight: np.ndarray
    event_code: np.ndarray
    status_code: np.ndarray
    service_code: np.ndarray
    carrier: np.ndarray
    origin_zip: np.ndarray
    dest_zip: np.ndarray
    facility_id: np.ndarray
    origin_lat: np.ndarray
    origin_lng: np.ndarray
    dest_lat: np.ndarray
    dest_lng: np.ndarray
    facility_lat: np.ndarray
    facility_lng: np.ndarray
    remaining_stops: np.ndarray
    weather: np.ndarray
    attempt_count: np.ndarray
    tz: np.ndarray  # tzinfo of each scan: the answers are given in the scan's own zone

    @property
    def local_day(self) -> np.ndarray:
        return np.floor((self.event_ts + self.local_offset) / DAY)

    def take(self, idx: np.ndarray) -> Frame:
        kw = {k: (getattr(self, k)[idx]) for k in self.__dataclass_fields__ if k != "n"}
        return Frame(n=len(kw["ok"]), **kw)


def _zip(z: Any) -> str:
    return str(z).strip()[:5] if z else ""


def _aware(d: Any) -> Any:
    """Requests should carry zoned times; a naive one is read as UTC rather than rejected."""
    return d if d.tzinfo is not None and d.utcoffset() is not None else d.replace(tzinfo=UTC)


def _read_row(r: EtaRequest) -> tuple:
    """Slow, tolerant path for one row; raises on what cannot be read."""
    ev = _aware(r.event_at)

    def ts(d: Any) -> float:
        return math.nan if d is None else float(_aware(d).timestamp())

    created = ts(r.shipment_created_at)
    hub = ts(r.last_hub_scan_at)
    return (
        str(r.shipment_id), float(ev.timestamp()), ev.utcoffset().total_seconds(), created,
        created if math.isnan(hub) else hub,
        ts(r.promised_at), ts(r.pickup_due_at), _num(r.weight_kg),
        EVENT_CODES.get(str(getattr(r.event_type, "value", r.event_type)), -1),
        STATUS_CODES.get(str(getattr(r.status, "value", r.status)), -1),
        SERVICE_CODES.get(str(getattr(r.service_level, "value", r.service_level)), -1),
        str(r.carrier or ""), _zip(r.origin_zip), _zip(r.dest_zip), str(r.facility_id or ""),
        _num(r.origin_lat), _num(r.origin_lng), _num(r.dest_lat), _num(r.dest_lng),
        _num(r.facility_lat), _num(r.facility_lng), _num(r.remaining_stops),
        _num((r.extra or {}).get("weather_severity")), float(r.attempt_count or 0), ev.tzinfo,
    )


_BAD_ROW = ("", 0.0, 0.0, 0.0, 0.0, math.nan, math.nan, math.nan, -1, -1, -1, "", "", "", "",
            *([math.nan] * 7), math.nan, 0.0, UTC)
_COLS = ("shipment_id", "event_ts", "local_offset", "created_ts", "leg_start_ts", "promised_ts",
         "pickup_due_ts", "weight",
         "event_code", "status_code", "service_code", "carrier", "origin_zip", "dest_zip", "facility_id",
         "origin_lat", "origin_lng", "dest_lat", "dest_lng", "facility_lat", "facility_lng",
         "remaining_stops", "weather", "attempt_count", "tz")
_OBJ = {"shipment_id", "carrier", "origin_zip", "dest_zip", "facility_id", "tz"}
_INT = {"event_code", "status_code", "service_code"}


def frame_from_requests(requests: Sequence[EtaRequest], promised: bool = True) -> Frame:
    """Never raises: rows that cannot be read come back with ok=False. `promised=False` leaves
    `promised_ts` NaN (serving a model without `promised_days` skips a datetime per row)."""
    try:
        return _fast_frame(requests, promised)
    except Exception:
        pass
    rows, ok = [], []
    for r in requests:
        try:
            rows.append(_read_row(r))
            ok.append(rows[-1][1] == rows[-1][1] and rows[-1][3] == rows[-1][3])
        except Exception:
            rows.append(_BAD_ROW)
            ok.append(False)
    cols = list(zip(*rows)) if rows else [()] * len(_COLS)
    kw: dict[str, np.ndarray] = {}
    for name, col in zip(_COLS, cols):
        if name in _OBJ:
            kw[name] = np.array(col, dtype=object)
        elif name in _INT:
            kw[name] = np.array(col, dtype=np.int16)
        else:
            kw[name] = np.array(col, dtype=np.float64)
    return Frame(n=len(rows), ok=np.array(ok, dtype=bool), **kw)


_FIELDS = ("event_at", "shipment_created_at", "last_hub_scan_at", "promised_at", "pickup_due_at", "shipment_id",
           "event_type", "status", "service_level", "carrier", "origin_zip", "dest_zip", "facility_id",
           "origin_lat", "origin_lng", "dest_lat", "dest_lng", "facility_lat", "facility_lng", "remaining_stops",
           "extra", "attempt_count", "weight_kg")
_GET = attrgetter(*_FIELDS)
_TZ = attrgetter("tzinfo")


def _objects(items: Any, n: int) -> np.ndarray:
    """1-d object array (np.array would try to look inside the items)."""
    out = np.empty(n, dtype=object)
    out[:] = list(items)
    return out


def _stamps(col: tuple, n: int) -> np.ndarray:
    """Epoch seconds of zoned datetimes, NaN for None (C-level map when the column has no None)."""
    nones = col.count(None)
    if nones == n:
        return np.full(n, math.nan)
    if nones == 0:
        return np.fromiter(map(datetime.timestamp, col), np.float64, n)
    return np.array([d.timestamp() if d is not None else math.nan for d in col], dtype=np.float64)


def _fast_frame(requests: Sequence[EtaRequest], promised: bool = True) -> Frame:
    """The batched path: one C-level pass reads every field, then one vectorised step per column;
    any surprise (a naive time, an unknown code) drops the batch to the tolerant path."""
    n = len(requests)
    (ev, created, hubs, prom, due, sid, etype, status, level, carrier, ozip, dzip, fac, olat, olng, dlat, dlng,
     flat, flng, stops, extra, attempts, weight) = zip(*map(_GET, requests)) if n else ((),) * len(_FIELDS)
    # A naive time would be read in the machine's zone by timestamp(): leave those to the slow path.
    # (A naive event_at also raises below: utcoffset() is None.)
    if None in map(_TZ, created) or None in map(_TZ, filter(None, hubs)) or None in map(_TZ, filter(None, due)) \
            or (promised and None in map(_TZ, filter(None, prom))):
        raise ValueError("naive datetime in batch")
    tzs = _objects(map(_TZ, ev), n)
    zones = set(tzs.tolist())
    if all(type(z) is timezone for z in zones):  # fixed offsets (not DST zones): one utcoffset per zone
        offs = np.empty(n)
        for z in zones:
            offs[tzs == z] = z.utcoffset(None).total_seconds()
    else:
        offs = np.fromiter((d.utcoffset().total_seconds() for d in ev), np.float64, n)  # type: ignore[union-attr]
    event_ts = np.fromiter(map(datetime.timestamp, ev), np.float64, n)
    created_ts = np.fromiter(map(datetime.timestamp, created), np.float64, n)
    leg = _stamps(hubs, n)
    leg = np.where(np.isnan(leg), created_ts, leg)
    f = np.float64
    return Frame(
        n=n,
        ok=np.ones(n, dtype=bool),
        shipment_id=np.array(list(map(str, sid)), dtype=object),
        event_ts=event_ts,
        local_offset=offs,
        created_ts=created_ts,
        leg_start_ts=leg,
        promised_ts=_stamps(prom, n) if promised else np.full(n, math.nan),
        pickup_due_ts=_stamps(due, n),
        weight=np.array(weight, dtype=f),  # None -> nan
        event_code=np.fromiter(map(EVENT_CODES.__getitem__, etype), np.int16, n),
        status_code=np.fromiter(map(STATUS_CODES.__getitem__, status), np.int16, n),
        service_code=np.fromiter(map(SERVICE_CODES.__getitem__, level), np.int16, n),
        carrier=np.array([c or "" for c in carrier], dtype=object),
        origin_zip=np.array([(z or "")[:5] for z in ozip], dtype=object),
        dest_zip=np.array([(z or "")[:5] for z in dzip], dtype=object),
        facility_id=np.array([x or "" for x in fac], dtype=object),
        origin_lat=np.array(olat, dtype=f),
        origin_lng=np.array(olng, dtype=f),
        dest_lat=np.array(dlat, dtype=f),
        dest_lng=np.array(dlng, dtype=f),
        facility_lat=np.array(flat, dtype=f),
        facility_lng=np.array(flng, dtype=f),
        remaining_stops=np.array(stops, dtype=f),
        weather=np.array([x.get("weather_severity") if x else None for x in extra], dtype=f),
        attempt_count=np.array(attempts, dtype=f),
        tz=tzs,
    )


def label_twins(frame: Frame) -> Frame:
    """The same shipments as seen at their label scan: what a label-time prediction looked at.
    Used to score past label-time predictions once their deliveries come in (live calibration)."""
    kw = {k: getattr(frame, k).copy() for k in frame.__dataclass_fields__ if k != "n"}
    kw["event_ts"] = frame.created_ts.copy()
    kw["leg_start_ts"] = frame.created_ts.copy()
    kw["event_code"] = np.full(frame.n, LABEL, dtype=np.int16)
    kw["status_code"] = np.full(frame.n, STATUS_CODES["LABEL_CREATED"], dtype=np.int16)
    kw["attempt_count"] = np.zeros(frame.n)
    kw["ok"] = frame.ok & np.isfinite(frame.created_ts)
    return Frame(n=frame.n, **kw)


# --------------------------------------------------------------------------------------------
# Static tables: learnt once per training window, shipped inside the artifact.


def _smooth(n: Any, value: Any, parent: Any, m: float) -> Any:
    return (n * value + m * parent) / (n + m)


def _local_days(ts: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return np.floor((ts + offset) / DAY)


@dataclass
class FeatureTables:
    """Zip centroids, carrier-route and facility medians, learnt from a training window."""

    geo: dict[str, tuple[float, float, str]] = field(default_factory=dict)  # zip -> lat, lng, region
    route: dict[str, tuple[float, float]] = field(default_factory=dict)     # key -> median days, on-time
    segment: dict[str, float] = field(default_factory=dict)                 # key -> median leg days
    handling: dict[str, float] = field(default_factory=dict)                # facility/region -> days
    carriers: list[str] = field(default_factory=list)
    global_median_days: float = math.nan
    global_on_time: float = math.nan
    _regions: dict[str, str] | None = field(default=None, repr=False, compare=False)
    _prefix: dict[str, tuple[float, float, str]] | None = field(default=None, repr=False, compare=False)
    # Lookups are static for a model's life: remember resolved keys across batches (bounded).
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    # -- lookups (vectorised over a Frame; per-row dict gets, cached per distinct key) --

    def prefix_geo(self) -> dict[str, tuple[float, float, str]]:
        """zip3 prefix -> mean centroid and most common region of its known zips: the back-off for
        a zip with no centroid of its own (new or mistyped zips; 0.5% of the Olist test orders)."""
        pg = self._prefix
        if pg is None:
            acc: dict[str, list[Any]] = {}
            for z, (la, ln, r) in self.geo.items():
                if len(z) >= 3:
                    a = acc.setdefault(z[:3], [0.0, 0.0, 0, Counter()])
                    a[0] += la
                    a[1] += ln
                    a[2] += 1
                    a[3][r] += 1
            pg = self._prefix = {k: (a[0] / a[2], a[1] / a[2], a[3].most_common(1)[0][0]) for k, a in acc.items()}
        return pg

    def region(self, zips: np.ndarray) -> np.ndarray:
        reg = self._regions
        if reg is None:
            reg = self._regions = {z: g[2] for z, g in self.geo.items()}
        get = reg.get
        out = [get(z) for z in zips.tolist()]
        if None in out:
            pg = self.prefix_geo()
            for i in [i for i, r in enumerate(out) if r is None]:
                z = str(zips[i])
                g = pg.get(z[:3]) if len(z) >= 3 else None
                out[i] = g[2] if g is not None else ("Z" + z[:3] if z else "")
        return np.array(out, dtype=object)

    def coords(self, zips: np.ndarray, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        miss = np.isnan(lat) | np.isnan(lng)
        if not miss.any():
            return lat, lng
        lat, lng = lat.copy(), lng.copy()
        geo = self.geo
        pg: dict[str, tuple[float, float, str]] | None = None
        for i in np.flatnonzero(miss):
            z = zips[i]
            g = geo.get(z)
            if g is None and z:
                if pg is None:
                    pg = self.prefix_geo()
                g = pg.get(z[:3])
            if g is not None:
                lat[i], lng[i] = g[0], g[1]
        return lat, lng

    def _cached(self, table: str, keys: list[Any]) -> tuple[dict[Any, Any], list[Any]]:
        """The memo of one lookup table and the batch's distinct keys it does not hold yet."""
        memo = self._memo.get(table)
        if memo is None or len(memo) > 500_000:
            memo = self._memo[table] = {}
        return memo, [k for k in dict.fromkeys(keys) if k not in memo]

    def route_stats(self, carrier: np.ndarray, o_reg: np.ndarray, d_reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        route = self.route
        glob = (self.global_median_days, self.global_on_time)
        keys = list(zip(carrier.tolist(), o_reg.tolist(), d_reg.tolist()))
        found, new = self._cached("route", keys)
        for key in new:
            c, o, d = key
            found[key] = route.get(f"{c}|{o}|{d}") or route.get(f"{c}|*|{d}") or route.get(f"*|*|{d}") or glob
        both = np.array(list(map(found.__getitem__, keys)), dtype=np.float64).reshape(len(keys), 2)
        return both[:, 0].copy(), both[:, 1].copy()

    def segment_median(self, event_code: np.ndarray, facility: np.ndarray, o_reg: np.ndarray) -> np.ndarray:
        seg = self.segment
        keys = list(zip(event_code.tolist(), facility.tolist(), o_reg.tolist()))
        found, new = self._cached("segment", keys)
        for key in new:
            e, f, o = key
            found[key] = seg.get(f"{e}|{f}") or seg.get(f"{e}|r:{o}") or seg.get(f"{e}") or math.nan
        return np.fromiter(map(found.__getitem__, keys), np.float64, len(keys))

    def handling_days(self, facility: np.ndarray, o_reg: np.ndarray) -> np.ndarray:
        h = self.handling
        g = h.get("*", math.nan)
        keys = list(zip(facility.tolist(), o_reg.tolist()))
        found, new = self._cached("handling", keys)
        for key in new:
            f, o = key
            found[key] = h.get(f) or h.get(f"r:{o}") or g
        return np.fromiter(map(found.__getitem__, keys), np.float64, len(keys))

    # -- learning --

    @classmethod
    def fit(cls, frame: Frame, delivered_ts: np.ndarray, geo: dict[str, tuple[float, float, str]],
            smoothing: float = 20.0) -> FeatureTables:
        """Rows of `frame` are training samples (any scan moment) whose delivery time is known."""
        import pandas as pd

        t = cls(geo=dict(geo))
        t.carriers = sorted({c for c in frame.carrier})
        o_reg, d_reg = t.region(frame.origin_zip), t.region(frame.dest_zip)
        df = pd.DataFrame({
            "sid": frame.shipment_id, "carrier": frame.carrier, "o": o_reg, "d": d_reg,
            "fac": frame.facility_id, "ev": frame.event_code.astype(int),
            "days": (delivered_ts - frame.created_ts) / DAY,
            "leg": (frame.event_ts - frame.leg_start_ts) / DAY,
            "on_time": np.where(
                np.isnan(frame.promised_ts), np.nan,
                (_local_days(delivered_ts, frame.local_offset) <= _local_days(frame.promised_ts, frame.local_offset))
                .astype(float)),
        })
        ship = df.drop_duplicates("sid")
        ship = ship[np.isfinite(ship["days"]) & (ship["days"] >= 0)]
        t.global_median_days = float(ship["days"].median()) if len(ship) else math.nan
        t.global_on_time = float(ship["on_time"].mean()) if ship["on_time"].notna().any() else math.nan
        m = smoothing

        def agg(keys: list[str]) -> pd.DataFrame:
            return ship.groupby(keys).agg(n=("days", "size"), med=("days", "median"), ot=("on_time", "mean"))

        # Backoff chain: destination region, then carrier + destination, then the carrier-route.
        dest = agg(["d"])
        dest_med = _smooth(dest["n"].values, dest["med"].values, t.global_median_days, m)
        dest_ot = _smooth(dest["n"].values, dest["ot"].fillna(t.global_on_time).values, t.global_on_time, m)
        dest_map = {d: (float(a), float(b)) for d, a, b in zip(dest.index, dest_med, dest_ot)}
        for d, v in dest_map.items():
            t.route[f"*|*|{d}"] = v
        cd = agg(["carrier", "d"]).reset_index()
        cd_map: dict[tuple[str, str], tuple[float, float]] = {}
        for c, d, n, med, ot in cd[["carrier", "d", "n", "med", "ot"]].itertuples(index=False):
            pm, po = dest_map[d]
            v = (float(_smooth(n, med, pm, m)), float(_smooth(n, po if ot != ot else ot, po, m)))
            cd_map[(c, d)] = v
            t.route[f"{c}|*|{d}"] = v
        r = agg(["carrier", "o", "d"]).reset_index()
        for c, o, d, n, med, ot in r[["carrier", "o", "d", "n", "med", "ot"]].itertuples(index=False):
            pm, po = cd_map[(c, d)]
            t.route[f"{c}|{o}|{d}"] = (float(_smooth(n, med, pm, m)), float(_smooth(n, po if ot != ot else ot, po, m)))

        # Leg medians per (scan type, facility) with backoff to (scan type, origin region), scan type.
        legs = df[np.isfinite(df["leg"]) & (df["leg"] >= 0) & (df["ev"] != LABEL)]
        if len(legs):
            ev_med = legs.groupby("ev")["leg"].median()
            for e, v in ev_med.items():
                t.segment[f"{e}"] = float(v)
            eo = legs.groupby(["ev", "o"])["leg"].agg(["size", "median"]).reset_index()
            for e, o, n, med in eo.itertuples(index=False):
                t.segment[f"{e}|r:{o}"] = float(_smooth(n, med, ev_med[e], m))
            ef = legs[legs["fac"] != ""].groupby(["ev", "fac", "o"])["leg"].agg(["size", "median"]).reset_index()
            for e, f, o, n, med in ef.itertuples(index=False):
                t.segment[f"{e}|{f}"] = float(_smooth(n, med, t.segment[f"{e}|r:{o}"], m))
        # Origin handling: label -> first pickup, per origin facility (the seller, for Olist).
        pk = legs[legs["ev"] == PICKUP]
        if len(pk):
            g = float(pk["leg"].median())
            t.handling["*"] = g
            ro = pk.groupby("o")["leg"].agg(["size", "median"])
            for o, (n, med) in ro.iterrows():
                t.handling[f"r:{o}"] = float(_smooth(n, med, g, m))
            rf = pk[pk["fac"] != ""].groupby(["fac", "o"])["leg"].agg(["size", "median"]).reset_index()
            for f, o, n, med in rf.itertuples(index=False):
                t.handling[f] = float(_smooth(n, med, t.handling[f"r:{o}"], m))
        return t

    def to_json(self) -> dict[str, Any]:
        return {
            "geo": {k: list(v) for k, v in self.geo.items()},
            "route": {k: list(v) for k, v in self.route.items()},
            "segment": self.segment, "handling": self.handling, "carriers": self.carriers,
            "global_median_days": self.global_median_days, "global_on_time": self.global_on_time,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FeatureTables:
        return cls(
            geo={k: (float(v[0]), float(v[1]), str(v[2])) for k, v in raw["geo"].items()},
            route={k: (float(v[0]), float(v[1])) for k, v in raw["route"].items()},
            segment={k: float(v) for k, v in raw["segment"].items()},
            handling={k: float(v) for k, v in raw["handling"].items()},
            carriers=list(raw["carriers"]),
            global_median_days=float(raw["global_median_days"]),
            global_on_time=float(raw["global_on_time"]),
        )


# --------------------------------------------------------------------------------------------
# Rolling state: whole local days, looked up strictly before the request's day.

WINDOW = 7
BASELINE = 28
PENDING_1 = (7, 14)
PENDING_2 = (14, 28)
ROLLING = {"volume_index", "drift_7d", "facility_throughput", "pending_7_14", "pending_14_28"}

KEYED_WINDOW = 90      # days summed by the as-of key statistics
KEYED_SHRINK = 10.0    # pseudo-count towards the window's overall mean
_SHIFT = 20            # code = key id << 20 | day (epoch days < 2**20)
_DAYMASK = (1 << _SHIFT) - 1
KEYED = {"dest_zip3_delay", "origin_zip_delay", "route_zip3_delay", "origin_handling_rel"}


class KeyedDaily:
    """Per-key daily (count, sum) cells with vectorised window sums over [day - W, day).

    Cells live in one sorted code array (key id << 20 | day) with cumulative counts and sums, so a
    batch's window sums are two `searchsorted` calls, whatever the number of keys. New
    observations wait in a buffer that a lookup merges only when it holds a day the lookup can
    see (earlier than the latest requested day): live, the day's own deliveries are buffered and
    merged once, at the first request of the next day (or at once for a late event). Any arrival
    order gives the same cells; sums are rounded to 1e-9 so that merge order cannot change a
    feature's bits (offline replay = live batches)."""

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.code: np.ndarray = np.empty(0, dtype=np.int64)
        self.n: np.ndarray = np.empty(0)
        self.s: np.ndarray = np.empty(0)
        self._buf: list[tuple[np.ndarray, np.ndarray]] = []
        self._buf_min_day: float = math.inf
        self._cum: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, keys: list[Any], days: np.ndarray, vals: np.ndarray) -> None:
        if not len(keys):
            return
        ids = self.ids
        for k in keys:
            if k not in ids:
                ids[k] = len(ids)
        d = days.astype(np.int64)
        code = (np.fromiter(map(ids.__getitem__, keys), np.int64, len(keys)) << _SHIFT) | d
        self._buf.append((code, np.asarray(vals, dtype=np.float64)))
        self._buf_min_day = min(self._buf_min_day, int(d.min()))
        if sum(len(c) for c, _ in self._buf) > 200_000:
            self._merge()

    def _merge(self) -> None:
        if not self._buf:
            return
        bc = np.concatenate([c for c, _ in self._buf])
        bv = np.concatenate([v for _, v in self._buf])
        code = np.concatenate([self.code, bc])
        u, inv = np.unique(code, return_inverse=True)
        self.n = np.bincount(inv, weights=np.concatenate([self.n, np.ones(len(bc))]), minlength=len(u))
        self.s = np.bincount(inv, weights=np.concatenate([self.s, bv]), minlength=len(u))
        self.code = u
        self._buf = []
        self._buf_min_day = math.inf
        self._cum = None

    def window(self, keys: list[Any], days: np.ndarray, width: int = KEYED_WINDOW) -> tuple[np.ndarray, np.ndarray]:
        """(count, sum) over the cells of each row's key on days [day - width, day)."""
        m = len(keys)
        if m == 0:
            return np.zeros(0), np.zeros(0)
        days = days.astype(np.int64)
        if self._buf and self._buf_min_day < int(days.max()):
            self._merge()  # buffered cells this batch can see
        if self._cum is None:
            self._cum = (np.concatenate([[0.0], np.cumsum(self.n)]), np.concatenate([[0.0], np.cumsum(self.s)]))
        cn, cs = self._cum
        # An unknown key gets an id that owns no cell: its window is empty.
        ids = np.fromiter(map(self.ids.get, keys, repeat(1 << 40)), np.int64, m)
        hi_code = (ids << _SHIFT) | days
        q = np.concatenate([hi_code, hi_code - width])
        order = np.argsort(q)  # sorted needles: searchsorted walks the cells in order (~3x faster)
        pos = np.empty(2 * m, dtype=np.int64)
        pos[order] = np.searchsorted(self.code, q[order])
        hi, lo = pos[:m], pos[m:]
        return cn[hi] - cn[lo], np.round(cs[hi] - cs[lo], 9)

    def trim(self, keep_from_day: int) -> None:
        self._merge()
        keep = (self.code & _DAYMASK) >= keep_from_day
        self.code, self.n, self.s = self.code[keep], self.n[keep], self.s[keep]
        self._cum = None

    def to_json(self) -> dict[str, Any]:
        self._merge()
        keys: list[Any] = [None] * len(self.ids)
        for k, i in self.ids.items():
            keys[i] = list(k) if isinstance(k, tuple) else k
        return {"keys": keys, "code": self.code.tolist(), "n": self.n.tolist(), "s": self.s.tolist()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyedDaily:
        k = cls()
        k.ids = {(tuple(x) if isinstance(x, list) else x): i for i, x in enumerate(raw.get("keys", []))}
        k.code = np.array(raw.get("code", []), dtype=np.int64)
        k.n = np.array(raw.get("n", []), dtype=np.float64)
        k.s = np.array(raw.get("s", []), dtype=np.float64)
        return k


def _keyed_rel(store: KeyedDaily, keys: list[Any], days: np.ndarray, glob: tuple[np.ndarray, np.ndarray],
               m: float = KEYED_SHRINK) -> np.ndarray:
    """Shrunk window mean of each key minus the window's overall mean (NaN with no overall data)."""
    n, s = store.window(keys, days)
    gn, gs = glob
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(gn > 0, gs / np.where(gn > 0, gn, 1.0), np.nan)
        return (s + m * g) / (n + m) - g


def _zip3(zips: np.ndarray) -> list[str]:
    return [z[:3] for z in zips.tolist()]


KEYED_STORES = ("dest_zip3", "origin_zip", "route_zip3", "delivered", "facility_pickup", "pickup")


@dataclass
class History:
    """Daily counters fed by the scans themselves (offline: the replayed dataset; online: each batch).

    created[day]      new shipments (LABEL_CREATED)           -> volume_index
    delivered[day]    (count, sum log(actual/route median))   -> drift_7d
    inbound[fac,day]  PICKUP / ARRIVAL scans at a facility    -> facility_throughput
    keyed[...]        per-key daily cells (KeyedDaily): delivered log residuals by destination zip3,
                      origin zip, origin region x destination zip3 and overall; log label -> pickup
                      days by origin facility and overall     -> *_delay, origin_handling_rel
    """

    created: dict[int, float] = field(default_factory=dict)
    delivered: dict[int, list[float]] = field(default_factory=dict)
    cohort: dict[int, dict[int, float]] = field(default_factory=dict)  # label day -> delivery day -> n
    inbound: dict[str, dict[int, float]] = field(default_factory=dict)
    keyed: dict[str, KeyedDaily] = field(default_factory=lambda: {k: KeyedDaily() for k in KEYED_STORES})
    min_deliveries: int = 5
    _cache: dict[Any, float] = field(default_factory=dict, repr=False)

    def observe(self, frame: Frame, tables: FeatureTables) -> None:
        if frame.n == 0:
            return
        ok = frame.ok
        day = frame.local_day
        ev = frame.event_code
        self._cache.clear()  # a late event may change a window already looked up
        lab = ok & (ev == LABEL)
        for d, c in zip(*np.unique(day[lab], return_counts=True)):
            self.created[int(d)] = self.created.get(int(d), 0.0) + float(c)
        inb = ok & ((ev == PICKUP) | (ev == ARRIVAL)) & (frame.facility_id != "")
        for f, d in zip(frame.facility_id[inb], day[inb]):
            fd = self.inbound.setdefault(f, {})
            fd[int(d)] = fd.get(int(d), 0.0) + 1.0
        pk = np.flatnonzero(ok & (ev == PICKUP) & (frame.facility_id != "") & np.isfinite(frame.created_ts)
                            & np.isfinite(day))
        if len(pk):
            hv = np.log(np.maximum((frame.event_ts[pk] - frame.created_ts[pk]) / DAY, 0.05))
            self.keyed["facility_pickup"].add(frame.facility_id[pk].tolist(), day[pk], hv)
            self.keyed["pickup"].add([""] * len(pk), day[pk], hv)
        dl = ok & ((ev == DELIVERED) | (frame.status_code == STATUS_CODES["DELIVERED"]))
        if dl.any():
            idx = np.flatnonzero(dl)
            sub = frame.take(idx)
            o_reg = tables.region(sub.origin_zip)
            med, _ = tables.route_stats(sub.carrier, o_reg, tables.region(sub.dest_zip))
            actual = (sub.event_ts - sub.created_ts) / DAY
            resid = np.log(np.maximum(actual, 0.05) / np.maximum(med, 0.05))
            good = np.isfinite(resid) & np.isfinite(day[idx])
            if good.any():
                gd, gv = day[idx][good], resid[good]
                z3 = _zip3(sub.dest_zip[good])
                k = self.keyed
                k["dest_zip3"].add(z3, gd, gv)
                k["origin_zip"].add(sub.origin_zip[good].tolist(), gd, gv)
                k["route_zip3"].add(list(zip(o_reg[good].tolist(), z3)), gd, gv)
                k["delivered"].add([""] * len(gv), gd, gv)
            for d, v in zip(day[idx][good], resid[good]):
                cell = self.delivered.setdefault(int(d), [0.0, 0.0])
                cell[0] += 1.0
                cell[1] += float(v)
            born = _local_days(sub.created_ts, sub.local_offset)
            for c, d in zip(born[np.isfinite(born)].tolist(), day[idx][np.isfinite(born)].tolist()):
                cd = self.cohort.setdefault(int(c), {})
                cd[int(d)] = cd.get(int(d), 0.0) + 1.0

    def _sum(self, table: dict[int, float], lo: int, hi: int) -> float:
        return sum(table.get(d, 0.0) for d in range(lo, hi))

    def volume_index(self, day: int) -> float:
        key = ("v", day)
        v = self._cache.get(key)
        if v is None:
            recent = self._sum(self.created, day - WINDOW, day)
            base = self._sum(self.created, day - WINDOW - BASELINE, day - WINDOW) * WINDOW / BASELINE
            v = recent / base if base > 0 else math.nan
            self._cache[key] = v
        return v

    def drift(self, day: int) -> float:
        key = ("d", day)
        v = self._cache.get(key)
        if v is None:
            n = s = 0.0
            for d in range(day - WINDOW, day):
                cell = self.delivered.get(d)
                if cell:
                    n += cell[0]
                    s += cell[1]
            v = s / n if n >= self.min_deliveries else math.nan
            self._cache[key] = v
        return v

    def pending(self, day: int, lo: int, hi: int) -> float:
        """Share of the shipments labelled `hi`..`lo` days before `day` still undelivered at its
        start: a slowdown shows here weeks before the late deliveries complete."""
        key = ("p", day, lo)
        v = self._cache.get(key)
        if v is None:
            born = done = 0.0
            for c in range(day - hi, day - lo):
                born += self.created.get(c, 0.0)
                cd = self.cohort.get(c)
                if cd:
                    done += sum(n for d, n in cd.items() if d < day)
            v = min(max(1.0 - done / born, 0.0), 1.0) if born >= self.min_deliveries else math.nan
            self._cache[key] = v
        return v

    def throughput(self, facility: str, day: int) -> float:
        key = (facility, day)
        v = self._cache.get(key)
        if v is None:
            fd = self.inbound.get(facility)
            v = self._sum(fd, day - WINDOW, day) / WINDOW if fd else (0.0 if facility else math.nan)
            self._cache[key] = v
        return v

    def lookup(self, frame: Frame) -> dict[str, np.ndarray]:
        day = frame.local_day
        days, inv = np.unique(np.nan_to_num(day, nan=0.0).astype(np.int64), return_inverse=True)
        vol = np.array([self.volume_index(int(d)) for d in days])[inv]
        dr = np.array([self.drift(int(d)) for d in days])[inv]
        p1 = np.array([self.pending(int(d), *PENDING_1) for d in days])[inv]
        p2 = np.array([self.pending(int(d), *PENDING_2) for d in days])[inv]
        dint = day.astype(np.int64) if np.isfinite(day).all() else np.nan_to_num(day).astype(np.int64)
        keys = list(zip(frame.facility_id.tolist(), dint.tolist()))
        found = dict.fromkeys(keys)
        for key in found:
            found[key] = self.throughput(*key)
        thr = np.fromiter(map(found.__getitem__, keys), np.float64, len(keys))
        return {"volume_index": vol, "drift_7d": dr, "facility_throughput": thr,
                "pending_7_14": p1, "pending_14_28": p2}

    def lookup_keyed(self, frame: Frame, o_reg: np.ndarray, need: set[str]) -> dict[str, np.ndarray]:
        """The as-of key statistics: cells of days strictly before each request's day only."""
        day = np.nan_to_num(frame.local_day).astype(np.int64)
        k = self.keyed
        out: dict[str, np.ndarray] = {}
        days, inv = np.unique(day, return_inverse=True)  # the overall windows depend on the day only

        def overall(store: KeyedDaily) -> tuple[np.ndarray, np.ndarray]:
            n, s = store.window([""] * len(days), days)
            return n[inv], s[inv]

        if need & {"dest_zip3_delay", "origin_zip_delay", "route_zip3_delay"}:
            glob = overall(k["delivered"])
            z3 = _zip3(frame.dest_zip)
            if "dest_zip3_delay" in need:
                out["dest_zip3_delay"] = _keyed_rel(k["dest_zip3"], z3, day, glob)
            if "origin_zip_delay" in need:
                out["origin_zip_delay"] = _keyed_rel(k["origin_zip"], frame.origin_zip.tolist(), day, glob)
            if "route_zip3_delay" in need:
                out["route_zip3_delay"] = _keyed_rel(k["route_zip3"], list(zip(o_reg.tolist(), z3)), day, glob)
        if "origin_handling_rel" in need:
            out["origin_handling_rel"] = _keyed_rel(k["facility_pickup"], frame.facility_id.tolist(), day,
                                                    overall(k["pickup"]))
        return out

    def trim(self, keep_from_day: int) -> None:
        for store in self.keyed.values():  # their window reaches further back than the daily counters'
            store.trim(keep_from_day - KEYED_WINDOW)
        self.created = {d: v for d, v in self.created.items() if d >= keep_from_day}
        self.delivered = {d: v for d, v in self.delivered.items() if d >= keep_from_day}
        self.cohort = {c: v for c, v in self.cohort.items() if c >= keep_from_day}
        inbound = {}
        for f, fd in self.inbound.items():
            kept = {d: v for d, v in fd.items() if d >= keep_from_day}
            if kept:
                inbound[f] = kept
        self.inbound = inbound
        self._cache.clear()

    def last_day(self) -> int | None:
        days = list(self.created) + list(self.delivered)
        return max(days) if days else None

    def to_json(self) -> dict[str, Any]:
        return {
            "created": {str(k): v for k, v in self.created.items()},
            "delivered": {str(k): v for k, v in self.delivered.items()},
            "inbound": {f: {str(k): v for k, v in fd.items()} for f, fd in self.inbound.items()},
            "cohort": {str(c): {str(k): v for k, v in cd.items()} for c, cd in self.cohort.items()},
            "keyed": {name: store.to_json() for name, store in self.keyed.items()},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> History:
        return cls(
            created={int(k): float(v) for k, v in raw.get("created", {}).items()},
            delivered={int(k): [float(v[0]), float(v[1])] for k, v in raw.get("delivered", {}).items()},
            inbound={f: {int(k): float(v) for k, v in fd.items()} for f, fd in raw.get("inbound", {}).items()},
            cohort={int(c): {int(k): float(v) for k, v in cd.items()} for c, cd in raw.get("cohort", {}).items()},
            keyed={name: KeyedDaily.from_json(raw.get("keyed", {}).get(name, {})) for name in KEYED_STORES},
        )


# --------------------------------------------------------------------------------------------


def haversine_km(lat1: np.ndarray, lng1: np.ndarray, lat2: np.ndarray, lng2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dl = p2 - p1, np.radians(lng2 - lng1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _zip_number(zips: np.ndarray) -> np.ndarray:
    return np.array([float(z) if z.isdigit() else math.nan for z in zips], dtype=np.float64)


def build_features(frame: Frame, tables: FeatureTables, history: History | None,
                   names: Iterable[str]) -> np.ndarray:
    """(n, len(names)) float32; NaN marks a value that is not known for that row."""
    names = list(names)
    need = set(names)
    cols: dict[str, np.ndarray] = {}
    n = frame.n
    nan = np.full(n, np.nan)
    o_reg = tables.region(frame.origin_zip)
    d_reg = tables.region(frame.dest_zip)
    olat, olng = tables.coords(frame.origin_zip, frame.origin_lat, frame.origin_lng)
    dlat, dlng = tables.coords(frame.dest_zip, frame.dest_lat, frame.dest_lng)
    cols.update(origin_lat=olat, origin_lng=olng, dest_lat=dlat, dest_lng=dlng)
    if "origin_zip" in need:
        cols["origin_zip"] = _zip_number(frame.origin_zip)
    if "dest_zip" in need:
        cols["dest_zip"] = _zip_number(frame.dest_zip)
    cols["service_level"] = np.where(frame.service_code >= 0, frame.service_code, np.nan)
    if "carrier" in need:
        vocab = {c: i for i, c in enumerate(tables.carriers)}
        cols["carrier"] = np.array([vocab.get(c, math.nan) for c in frame.carrier], dtype=np.float64)
    cols["event_type"] = np.where(frame.event_code >= 0, frame.event_code, np.nan)
    local = frame.event_ts + frame.local_offset
    cols["day_of_week"] = (np.floor(local / DAY) + 3) % 7  # 1970-01-01 was a Thursday
    cols["time_of_day"] = np.mod(local, DAY) / 3600.0
    cols["elapsed_days"] = (frame.event_ts - frame.created_ts) / DAY
    if "leg_elapsed_ratio" in need:
        seg = tables.segment_median(frame.event_code, frame.facility_id, o_reg)
        leg = (frame.event_ts - frame.leg_start_ts) / DAY
        cols["leg_elapsed_ratio"] = np.where(seg > 0, leg / np.where(seg > 0, seg, 1.0), np.nan)
    here_lat = np.where(np.isnan(frame.facility_lat), olat, frame.facility_lat)
    here_lng = np.where(np.isnan(frame.facility_lng), olng, frame.facility_lng)
    cols["remaining_distance_km"] = haversine_km(here_lat, here_lng, dlat, dlng)
    cols["remaining_stops"] = frame.remaining_stops
    if "origin_handling_days" in need:
        cols["origin_handling_days"] = tables.handling_days(frame.facility_id, o_reg)
    if need & {"route_median_days", "route_on_time_rate"}:
        med, ot = tables.route_stats(frame.carrier, o_reg, d_reg)
        cols["route_median_days"], cols["route_on_time_rate"] = med, ot
    cols["promised_days"] = (frame.promised_ts - frame.event_ts) / DAY
    cols["pickup_due_days"] = (frame.pickup_due_ts - frame.event_ts) / DAY
    cols["weight_kg"] = frame.weight
    if history is not None and need & ROLLING:
        cols.update(history.lookup(frame))
    if history is not None and need & KEYED:
        cols.update(history.lookup_keyed(frame, o_reg, need))
    cols["weather_severity"] = frame.weather
    cols["attempt_count"] = frame.attempt_count
    out = np.empty((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        out[:, j] = cols.get(name, nan)
    out[~frame.ok] = np.nan
    return out
