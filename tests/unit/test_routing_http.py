"""POST /v1/routes/plan through httpx against a FastAPI app built here with the routing router: an
ordered plan with arrivals and unserved stops with reasons; bad input answered 422 with the reason."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI

from routing.http import router

TZ = timezone(timedelta(hours=-5))
T0 = datetime(2024, 6, 3, 8, 0, tzinfo=TZ)
DEPOT = {"lat": 40.6084, "lng": -75.4902}


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def point(i: int) -> dict:
    return {"lat": 40.6084 + 0.003 * (i + 1), "lng": -75.4902 + 0.002 * ((i % 3) - 1)}


def body(stops: list[dict], **kw) -> dict:
    return {"depot": DEPOT, "shift": {"start": at(0), "end": at(8 * 60)}, "stops": stops, "time_limit_s": 0.5} | kw


async def _post(payload: dict) -> httpx.Response:
    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        return await c.post("/v1/routes/plan", json=payload)


def post(payload: dict) -> httpx.Response:
    return asyncio.run(_post(payload))


def test_plan_returns_ordered_stops_with_arrivals_and_unserved_reasons() -> None:
    stops = [{"stop_id": f"s{i}", "location": point(i), "service_s": 60} for i in range(5)]
    stops.append({"stop_id": "late", "location": point(9), "windows": [{"start": at(-120), "end": at(-60)}]})
    stops.append({"stop_id": "noon", "location": point(7), "windows": [{"start": at(240), "end": at(270)}]})
    r = post(body(stops))
    assert r.status_code == 200, r.text
    plan = r.json()
    route = plan["routes"][0]["stops"]
    assert sorted(s["stop_id"] for s in route) == ["noon", "s0", "s1", "s2", "s3", "s4"]
    assert [s["sequence"] for s in route] == list(range(1, 7))
    starts = [datetime.fromisoformat(s["service_start"]) for s in route]
    assert starts == sorted(starts)
    noon = next(s for s in route if s["stop_id"] == "noon")
    assert T0 + timedelta(minutes=240) <= datetime.fromisoformat(noon["service_start"]) <= T0 + timedelta(minutes=270)
    assert plan["unserved"] == [
        {"stop_id": "late", "reason": "window_passed", "detail": plan["unserved"][0]["detail"]}
    ]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"service_s": -5}, "service time must be zero or positive"),
        ({"windows": [{"start": at(60), "end": at(30)}]}, "is before its start"),
        ({"location": {"lat": 0.0, "lng": 0.0}}, "missing-geocode placeholder"),
        ({"location": {"lat": 48.1}}, "Field required"),
    ],
)
def test_bad_stop_is_422_with_the_reason(patch: dict, message: str) -> None:
    r = post(body([{"stop_id": "s", "location": point(0)} | patch]))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any(message in d["msg"] for d in detail), detail
    assert all(d["loc"][:3] == ["body", "stops", 0] for d in detail), detail


def test_request_over_the_endpoint_budget_is_422() -> None:
    r = post(body([{"stop_id": "s", "location": point(0)}], time_limit_s=120))
    assert r.status_code == 422 and "cap of 30 s" in r.json()["detail"]


def test_empty_stop_list_is_422() -> None:
    r = post(body([]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "stops"]
