"""ETA benchmark: `python -m models.eta.bench DIR` prints a markdown table, baselines and model side
by side, on the chronological split of `evaluate` (earliest 75% of purchases learn, the rest test).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

COLUMNS = [
    ("seller_estimate", "seller estimate"),
    ("seller_estimate_shifted", "seller, shifted"),
    ("route_median", "route median"),
    ("rule", "rule"),
    ("model", "model"),
    ("model_at_handoff", "model at handoff"),
]
ROWS = [
    ("mae_days", "MAE (days)", "{:.2f}"),
    ("within_1d", "within ±1 d", "{:.1%}"),
    ("within_3d", "within ±3 d", "{:.1%}"),
    ("late_share", "late share (delivered after the ETA's date)", "{:.1%}"),
    ("coverage_p10_p90", "P10–P90 coverage", "{:.1%}"),
    ("fallback_share", "fallback share (rule answered)", "{:.2%}"),
    ("us_per_row", "batched inference, µs/row (whole estimate())", "{:.1f}"),
    ("cpu_us_per_row", "… the same as CPU time of this process, µs/row", "{:.1f}"),
    ("core_us_per_row", "… of which features + booster, µs/row", "{:.1f}"),
    ("booster_us_per_row", "… of which the booster call, µs/row", "{:.1f}"),
    ("n", "test orders", "{:d}"),
]


def table(res: dict) -> str:
    lines = ["| | " + " | ".join(h for _, h in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for key, label, fmt in ROWS:
        cells = []
        for col, _ in COLUMNS:
            v = res[col].get(key)
            cells.append("—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(res: dict) -> list[tuple[str, bool, str]]:
    m, s, r = res["model"], res["seller_estimate"], res["route_median"]
    return [
        ("model MAE ≤ ½ seller estimate's", m["mae_days"] <= 0.5 * s["mae_days"],
         f"{m['mae_days']:.2f} vs {0.5 * s['mae_days']:.2f}"),
        ("model MAE ≥ 10% below route median's", m["mae_days"] <= 0.9 * r["mae_days"],
         f"{m['mae_days']:.2f} vs {0.9 * r['mae_days']:.2f}"),
        ("P10–P90 coverage 80% ± 5% (model)", abs(m["coverage_p10_p90"] - 0.8) <= 0.05, f"{m['coverage_p10_p90']:.1%}"),
        ("P10–P90 coverage 80% ± 5% (at handoff)", abs(res["model_at_handoff"]["coverage_p10_p90"] - 0.8) <= 0.05,
         f"{res['model_at_handoff']['coverage_p10_p90']:.1%}"),
        ("batched inference < 10 µs/row (features + booster)", m["core_us_per_row"] < 10,
         f"{m['core_us_per_row']:.1f}"),
        ("batched inference < 10 µs/row (whole estimate(), wall)", m["us_per_row"] < 10, f"{m['us_per_row']:.1f}"),
        ("batched inference < 10 µs/row (whole estimate(), CPU)", m["cpu_us_per_row"] < 10,
         f"{m['cpu_us_per_row']:.1f}"),
    ]


def run(data_dir: str) -> dict:
    from models.eta import train

    t0 = time.perf_counter()
    res = train.evaluate(data_dir, timing=True)
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.eta.bench", description=__doc__)
    ap.add_argument("data_dir", help="directory laid out like shared/data/olist")
    ap.add_argument("--json-out", help="also write the raw results here")
    args = ap.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        ap.error(f"{args.data_dir}: not a directory")
    res = run(args.data_dir)
    print(table(res))
    print()
    for name, ok, detail in targets(res):
        print(f"- {'PASS' if ok else 'MISS'} {name}: {detail}")
    sp = res["split"]
    print(f"\nsplit at {sp['split_at']}: learn {sp['learn_orders']} orders "
          f"({sp['learn_outcomes_known']} outcomes known then), test {sp['test_orders_delivered']} delivered orders "
          f"{sp['test_first_purchase'][:10]}..{sp['test_last_purchase'][:10]}; model {res['model_info']['version']}, "
          f"fit {res['model_info']['fit_seconds']} s, wall {res['wall_seconds']} s; "
          f"python {platform.python_version()}, {platform.machine()}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
