"""Facility network seed: config/facilities/us_network.csv → PostgreSQL `facilities` (upsert, idempotent)."""

from __future__ import annotations

import csv
from pathlib import Path

import psycopg

from config.settings import CONFIG_DIR, Settings

DEFAULT_NETWORK = CONFIG_DIR / "facilities" / "us_network.csv"
COLUMNS = ("facility_id", "name", "address", "city", "state", "zip", "region", "lat", "lng", "type")


def seed_facilities(settings: Settings, path: Path | None = None) -> int:
    path = path or DEFAULT_NETWORK
    with open(path, newline="") as fh:
        rows = [tuple(r[c] for c in COLUMNS) for r in csv.DictReader(fh)]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    sql = (f"INSERT INTO facilities ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
           f"ON CONFLICT (facility_id) DO UPDATE SET {sets}")
    with psycopg.connect(settings.postgres.dsn) as conn, conn.cursor() as cur:
        cur.executemany(sql, rows)
    return len(rows)
