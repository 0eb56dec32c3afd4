"""A small deterministic dataset laid out like shared/data/olist, for tests and demos.

Delivery time = seller handling (per seller) + transit (grows with distance, per destination
state, slower in a "busy" stretch) with log-normal noise, so a model has something real to learn.
"""

from __future__ import annotations

import csv
import gzip
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

STATES = {"SP": (-23.5, -46.6), "RJ": (-22.9, -43.2), "MG": (-19.9, -43.9), "RS": (-30.0, -51.2),
          "BA": (-13.0, -38.5)}


def write_olist_like(root: str | Path, n_orders: int = 2000, days: int = 160, seed: int = 7,
                     start: datetime = datetime(2017, 5, 1)) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    states = list(STATES)
    zips: list[tuple[str, float, float, str]] = []
    for k, st in enumerate(states):
        lat0, lng0 = STATES[st]
        for j in range(12):
            z = f"{(k + 1) * 10000 + j * 37:05d}"
            zips.append((z, lat0 + rng.normal(0, 0.6), lng0 + rng.normal(0, 0.6), st))
    n_sellers = 25
    sellers = [(f"s{i:03d}", zips[int(rng.integers(0, 24))]) for i in range(n_sellers)]  # SP/RJ heavy
    handling = rng.uniform(0.5, 4.0, n_sellers)
    dest_slow = {st: rng.uniform(0.8, 1.4) for st in states}

    purchase = np.sort(rng.uniform(0, days * 86400.0, n_orders))
    rows_o: list[list[Any]] = []
    rows_c: list[list[Any]] = []
    rows_i: list[list[Any]] = []
    fmt = "%Y-%m-%d %H:%M:%S"
    for i, p in enumerate(purchase):
        s_idx = int(rng.integers(0, n_sellers))
        sid, (sz, slat, slng, sst) = sellers[s_idx]
        cz, clat, clng, cst = zips[int(rng.integers(0, len(zips)))]
        dist = float(np.hypot(slat - clat, (slng - clng) * 0.9) * 111.0)
        busy = 1.5 if 0.55 * days < p / 86400.0 < 0.7 * days else 1.0
        h = handling[s_idx] * rng.lognormal(0, 0.3)
        transit = (1.5 + dist / 350.0) * dest_slow[cst] * busy * rng.lognormal(0, 0.25)
        t0 = start + timedelta(seconds=float(p))
        est = (t0 + timedelta(days=float(np.ceil(h + transit * 1.6 + 6)))).replace(hour=0, minute=0, second=0)
        status = "delivered"
        picked = t0 + timedelta(days=float(h))
        handoff: datetime | None = picked
        delivered: datetime | None = picked + timedelta(days=float(transit))
        if rng.random() < 0.03:
            status, handoff, delivered = "canceled", None, None
        oid, cid = f"o{i:06d}", f"c{i:06d}"
        rows_o.append([oid, cid, status, t0.strftime(fmt), t0.strftime(fmt),
                       handoff.strftime(fmt) if handoff else "", delivered.strftime(fmt) if delivered else "",
                       est.strftime(fmt)])
        rows_c.append([cid, f"u{i:06d}", cz, "city", cst])
        rows_i.append([oid, 1, f"p{i % 50:03d}", sid, t0.strftime(fmt), 50.0, 10.0])

    def write(name: str, header: list[str], rows: list[list[Any]], gz: bool = True) -> None:
        path = root / (name + (".csv.gz" if gz else ".csv"))
        opener = gzip.open if gz else open
        with opener(path, "wt", newline="") as fh:  # type: ignore[operator]
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)

    write("olist_orders_dataset", ["order_id", "customer_id", "order_status", "order_purchase_timestamp",
                                   "order_approved_at", "order_delivered_carrier_date",
                                   "order_delivered_customer_date", "order_estimated_delivery_date"], rows_o)
    write("olist_customers_dataset", ["customer_id", "customer_unique_id", "customer_zip_code_prefix",
                                      "customer_city", "customer_state"], rows_c)
    write("olist_order_items_dataset", ["order_id", "order_item_id", "product_id", "seller_id",
                                        "shipping_limit_date", "price", "freight_value"], rows_i)
    write("olist_sellers_dataset", ["seller_id", "seller_zip_code_prefix", "seller_city", "seller_state"],
          [[sid, z[0], "city", z[3]] for sid, z in sellers], gz=False)
    write("olist_geolocation_zip_centroids", ["zip_code_prefix", "lat", "lng", "geo_city", "geo_state"],
          [[z, f"{a:.5f}", f"{b:.5f}", "city", st] for z, a, b, st in zips], gz=False)
    return root


# --------------------------------------------------------------------------------------------
# The carrier's own history (PostgreSQL shipments + Cassandra scans), for `eta train --from-stores`.

Facility = tuple[str, str, float, float]  # facility_id, type, lat, lng


def _km(a: Facility, b: Facility) -> float:
    return float(np.hypot(a[2] - b[2], (a[3] - b[3]) * np.cos(np.radians((a[2] + b[2]) / 2))) * 111.0)


def carrier_history(facilities: list[Facility], n: int = 600, days: int = 60, seed: int = 3,
                    start: datetime = datetime(2026, 1, 5)) -> list[dict[str, Any]]:
    """Delivered shipments with their scans: origin handling (per origin) -> hub -> delivery station
    (line haul grows with distance, faster for EXPRESS, slower into some stations) -> out for
    delivery the next morning. `start` must be zoned; times come back zoned like it. Each item:
    {shipment_id, service_level, origin, station, created_at, weight_grams, events: [(type, status,
    facility_id, at)]}."""
    rng = np.random.default_rng(seed)
    origins = [f for f in facilities if f[1] == "origin"][:8]
    hubs = [f for f in facilities if f[1] == "hub"]
    stations = [f for f in facilities if f[1] == "delivery_station"][:40]
    if not origins or not hubs or not stations:
        raise ValueError("need origin, hub and delivery_station facilities")
    handling = {o[0]: rng.uniform(0.2, 1.5) for o in origins}
    slow = {s[0]: rng.choice([1.0, 1.0, 1.5]) for s in stations}
    out = []
    for _ in range(n):
        o = origins[int(rng.integers(len(origins)))]
        s = stations[int(rng.integers(len(stations)))]
        hub = min(hubs, key=lambda h: _km(o, h))
        level = "EXPRESS" if rng.random() < 0.2 else "STANDARD"
        created = start + timedelta(days=float(rng.uniform(0, days)))
        pickup = created + timedelta(days=handling[o[0]] * float(rng.lognormal(0, 0.3)))
        arrive_hub = pickup + timedelta(hours=float(rng.uniform(3, 9)))
        leave_hub = arrive_hub + timedelta(hours=float(rng.uniform(2, 8)))
        haul = (0.3 + _km(hub, s) / 700.0) * (0.6 if level == "EXPRESS" else 1.0) * slow[s[0]]
        arrive_station = leave_hub + timedelta(days=haul * float(rng.lognormal(0, 0.2)))
        ofd = (arrive_station + timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
        delivered = ofd + timedelta(hours=float(rng.uniform(1, 9)))
        out.append({
            "shipment_id": str(uuid.UUID(bytes=rng.bytes(16), version=4)), "service_level": level,
            "origin": o[0], "station": s[0], "dest": (s[2] + rng.normal(0, 0.05), s[3] + rng.normal(0, 0.05)),
            "created_at": created, "weight_grams": int(rng.integers(100, 20000)),
            "events": [("PICKUP", "PICKED_UP", o[0], pickup), ("ARRIVAL", "IN_TRANSIT", hub[0], arrive_hub),
                       ("DEPARTURE", "IN_TRANSIT", hub[0], leave_hub),
                       ("ARRIVAL", "IN_TRANSIT", s[0], arrive_station),
                       ("OUT_FOR_DELIVERY", "OUT_FOR_DELIVERY", s[0], ofd),
                       ("DELIVERED", "DELIVERED", s[0], delivered)],
        })
    return out
