"""A small deterministic dataset laid out like shared/data/olist, for tests and demos.

Delivery time = seller handling (per seller) + transit (grows with distance, per destination
state, slower in a "busy" stretch) with log-normal noise, so a model has something real to learn.
"""

from __future__ import annotations

import csv
import gzip
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
