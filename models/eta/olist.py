"""Olist orders (a directory laid out like shared/data/olist) -> the scans a carrier would have seen.

One row per order in, EtaRequest objects out, so training goes through the serving feature path.
Moments: `label` (purchase, LABEL_CREATED at the seller), `handoff` (order_delivered_carrier_date,
PICKUP at the seller) and `delivered` (order_delivered_customer_date, used only to replay history).
Times in the files are local Brazilian wall-clock; they are read at the fixed offset UTC-03:00.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from models.domain import EventType, ServiceLevel, Status
from models.eta.base import EtaRequest

TZ = timezone(timedelta(hours=-3))
CARRIER = "olist"
MOMENTS = ("label", "handoff", "delivered")
_DATES = {
    "order_purchase_timestamp": "purchase",
    "order_approved_at": "approved",
    "order_delivered_carrier_date": "handoff",
    "order_delivered_customer_date": "delivered",
    "order_estimated_delivery_date": "estimated",
}
# Centroids outside this box are errors in the raw geolocation data (see shared/data/README.md).
_BOX = (-34.0, 5.5, -74.0, -34.0)


def _read(root: Path, stem: str) -> pd.DataFrame:
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        if (root / name).exists():
            return pd.read_csv(root / name, dtype=str, keep_default_na=False)
    raise FileNotFoundError(root / f"{stem}.csv[.gz]")


def _zip5(s: pd.Series) -> pd.Series:
    return s.str.strip().str.zfill(5)


def geo_table(root: str | Path) -> dict[str, tuple[float, float, str]]:
    """zip prefix -> (lat, lng, state), errors outside Brazil's box dropped."""
    root = Path(root)
    try:
        g = _read(root, "olist_geolocation_zip_centroids")
    except FileNotFoundError:
        return {}
    lat = pd.to_numeric(g["lat"], errors="coerce")
    lng = pd.to_numeric(g["lng"], errors="coerce")
    keep = lat.between(_BOX[0], _BOX[1]) & lng.between(_BOX[2], _BOX[3])
    z = _zip5(g["zip_code_prefix"])[keep]
    return {k: (float(a), float(b), str(s)) for k, a, b, s in zip(z, lat[keep], lng[keep], g["geo_state"][keep])}


def _epoch(col: pd.Series) -> np.ndarray:
    """Naive local wall clock -> epoch seconds at UTC-03:00 (NaN when missing)."""
    t = pd.to_datetime(col.replace("", None), errors="coerce")
    secs = (t - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)
    return secs.to_numpy(dtype=float) + 3 * 3600.0


def load(root: str | Path) -> pd.DataFrame:
    """One row per order, sorted by purchase: times as epoch seconds (NaN when missing)."""
    root = Path(root)
    o = _read(root, "olist_orders_dataset")
    c = _read(root, "olist_customers_dataset")
    it = _read(root, "olist_order_items_dataset")
    s = _read(root, "olist_sellers_dataset")
    df = o[["order_id", "customer_id", "order_status"]].rename(columns={"order_status": "status"})
    for col, name in _DATES.items():
        df[name] = _epoch(o[col])
    c = c.assign(cust_zip=_zip5(c["customer_zip_code_prefix"]))
    df = df.merge(c[["customer_id", "cust_zip", "customer_state"]], on="customer_id", how="left")
    it = it.assign(order_item_id=pd.to_numeric(it["order_item_id"], errors="coerce"),
                   due=_epoch(it["shipping_limit_date"]))
    try:  # parcel weight: optional file
        pr = _read(root, "olist_products_dataset")
        w = pd.to_numeric(pr["product_weight_g"], errors="coerce") / 1000.0
        it = it.merge(pr[["product_id"]].assign(w=w), on="product_id", how="left")
    except FileNotFoundError:
        it = it.assign(w=np.nan)
    g = it.groupby("order_id")
    per_order = pd.DataFrame({"pickup_due": g["due"].min(), "weight_kg": g["w"].sum(min_count=1)})
    first = it.sort_values(["order_id", "order_item_id"]).drop_duplicates("order_id")
    n_items = it.groupby("order_id").size().rename("n_items")
    df = df.merge(first[["order_id", "seller_id"]], on="order_id", how="left").merge(
        n_items, left_on="order_id", right_index=True, how="left").merge(
        per_order, left_on="order_id", right_index=True, how="left")
    s = s.assign(seller_zip=_zip5(s["seller_zip_code_prefix"]))
    df = df.merge(s[["seller_id", "seller_zip", "seller_state"]], on="seller_id", how="left")
    geo = geo_table(root)
    for side, z in (("o", "seller_zip"), ("d", "cust_zip")):
        pts = [geo.get(k) if isinstance(k, str) else None for k in df[z]]
        df[f"{side}_lat"] = [p[0] if p else np.nan for p in pts]
        df[f"{side}_lng"] = [p[1] if p else np.nan for p in pts]
    for col in ("seller_id", "seller_zip", "seller_state", "cust_zip", "customer_state"):
        df[col] = df[col].fillna("").astype(str)
    df = df.sort_values(["purchase", "order_id"], kind="stable").reset_index(drop=True)
    return df


def moment_ts(df: pd.DataFrame, moment: str) -> np.ndarray:
    return df[{"label": "purchase", "handoff": "handoff", "delivered": "delivered"}[moment]].to_numpy(float)


_KIND = {
    "label": (EventType.LABEL_CREATED, Status.LABEL_CREATED),
    "handoff": (EventType.PICKUP, Status.PICKED_UP),
    "delivered": (EventType.DELIVERED, Status.DELIVERED),
}


def _dt(x: float) -> datetime | None:
    return None if x != x else datetime.fromtimestamp(x, TZ)


def requests(df: pd.DataFrame, moment: str) -> list[EtaRequest]:
    """The request a carrier pipeline would have built at `moment` for each order (rows with no
    such moment are the caller's to drop: their event_at would be missing)."""
    event, status = _KIND[moment]
    at = moment_ts(df, moment)
    out = []
    cols = zip(df["order_id"], at, df["purchase"].to_numpy(float), df["estimated"].to_numpy(float),
               df["seller_id"], df["seller_zip"], df["cust_zip"], df["o_lat"].to_numpy(float),
               df["o_lng"].to_numpy(float), df["d_lat"].to_numpy(float), df["d_lng"].to_numpy(float),
               df["pickup_due"].to_numpy(float), df["weight_kg"].to_numpy(float))
    for oid, t, p, est, seller, oz, dz, olat, olng, dlat, dlng, due, kg in cols:
        out.append(EtaRequest(
            shipment_id=oid, service_level=ServiceLevel.STANDARD, status=status, event_type=event,
            event_at=_dt(t), shipment_created_at=_dt(p),  # type: ignore[arg-type]
            origin_lat=None if olat != olat else olat, origin_lng=None if olng != olng else olng,
            dest_lat=None if dlat != dlat else dlat, dest_lng=None if dlng != dlng else dlng,
            origin_zip=oz or None, dest_zip=dz or None,
            facility_id=seller or None, facility_type="origin",
            carrier=CARRIER, promised_at=_dt(est), pickup_due_at=_dt(due), weight_kg=None if kg != kg else kg,
        ))
    return out


def history_requests(df: pd.DataFrame) -> list[EtaRequest]:
    """Every scan the dataset implies (label, handoff, delivery) in time order, for History replay."""
    reqs: list[EtaRequest] = []
    keys: list[float] = []
    for m in MOMENTS:
        t = moment_ts(df, m)
        keep = np.flatnonzero(np.isfinite(t))
        sub = df.iloc[keep]
        reqs.extend(requests(sub, m))
        keys.extend(t[keep].tolist())
    order = np.argsort(np.array(keys), kind="stable")
    return [reqs[i] for i in order]
