"""Where the workplace's public benchmark data is: PARCEL_SHARED_DATA, else `../shared/data` beside
the checkout (as CI lays it out), else the machine's /work/shared/data (a clone elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    candidates = [Path(os.environ["PARCEL_SHARED_DATA"])] if os.environ.get("PARCEL_SHARED_DATA") else []
    candidates += [ROOT.parent / "shared" / "data", Path("/work/shared/data")]
    for path in candidates:
        if (path / "tsplib").is_dir():
            return path
    raise FileNotFoundError(f"benchmark data not found in {[str(c) for c in candidates]}; set PARCEL_SHARED_DATA")


DATA = shared_data()
