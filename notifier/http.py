"""HTTP surface of the notifier, mounted by the API app (api/app.py `include_router`):

  GET  /r/{token}                     the reschedule form (HTML) behind the link in a failed-attempt message
  POST /r/{token}                     the form's submission (HTML confirmation)
  GET  /v1/reschedule/{token}         the choices as JSON: delivery windows and nearby pickup stations
  POST /v1/reschedule/{token}         store + publish + confirm a choice (201), JSON
  GET  /v1/reschedule/ops/exceptions  the operations view: exceptions by day, region, facility and reason
  GET  /u/{token}                     "stop these emails?" (HTML; a GET changes nothing: mail scanners fetch links)
  POST /u/{token}                     the opt-out: the form's button, or a mail client's RFC 8058 one-click POST
                                      (`List-Unsubscribe=One-Click`) from the email's List-Unsubscribe header

The token is an HMAC of the shipment id under the tracking secret: unguessable, no lookup table.
Errors are JSON (or an HTML page for the form) with a code and a message: 404 bad link, 409 a
delivered/returned shipment, 422 a bad choice, 503 when the choice cannot be published.
"""

from __future__ import annotations

import html
from datetime import date
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError

from notifier.links import BadToken, verify_unsubscribe
from notifier.reschedule import RescheduleChoice, RescheduleError, RescheduleService

router = APIRouter(tags=["notifier"])


@lru_cache(maxsize=1)
def _default_service() -> RescheduleService:
    from config.settings import get_settings
    from topologies.bootstrap import tracking_secret

    s = get_settings()
    return RescheduleService(s, tracking_secret(s))


def get_service() -> RescheduleService:
    """Dependency: tests override it (`app.dependency_overrides[get_service]`)."""
    return _default_service()


def _error(exc: RescheduleError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)


@router.get("/v1/reschedule/ops/exceptions")
def exceptions_view(day: date | None = Query(None), region: str | None = Query(None),
                    svc: RescheduleService = Depends(get_service)) -> Any:
    """Exceptions and failed attempts aggregated by day, region, facility and reason code."""
    where: list[str] = []
    params: list[object] = []
    if day is not None:
        where.append("day = %s")
        params.append(day)
    if region is not None:
        where.append("region = %s")
        params.append(region)
    sql = ("SELECT day, region, facility_id, reason_code, events FROM exception_daily"
           + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY day DESC, events DESC LIMIT 1000")
    rows = svc.store.conn.execute(sql, params).fetchall()
    return [{**r, "day": r["day"].isoformat()} for r in rows]


@router.get("/v1/reschedule/{token}")
async def reschedule_options(token: str, svc: RescheduleService = Depends(get_service)) -> Any:
    try:
        return await run_in_threadpool(svc.options, token)
    except RescheduleError as exc:
        return _error(exc)


@router.post("/v1/reschedule/{token}", status_code=201)
async def reschedule_submit(token: str, choice: RescheduleChoice, svc: RescheduleService = Depends(get_service)) -> Any:
    try:
        return await run_in_threadpool(svc.submit, token, choice)
    except RescheduleError as exc:
        return _error(exc)


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}}
fieldset{{margin:1rem 0}}label{{display:block;margin:.3rem 0}}button{{padding:.5rem 1rem}}</style>
</head><body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


@router.get("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
async def reschedule_form(token: str, svc: RescheduleService = Depends(get_service)) -> Any:
    try:
        opts = await run_in_threadpool(svc.options, token)
    except RescheduleError as exc:
        return _page("Link not valid", f"<p>{html.escape(exc.message)}</p>", exc.status)
    tn = html.escape(opts["tracking_number"])
    if not opts["can_reschedule"]:
        return _page(f"Parcel {tn}", f"<p>This parcel is {html.escape(opts['status'])}; nothing to reschedule.</p>",
                     409)
    windows = "".join(
        f'<label><input type="radio" name="choice" value="window|{html.escape(w["window_start"])}|'
        f'{html.escape(w["window_end"])}" required> {html.escape(w["label"])}</label>' for w in opts["windows"])
    pickups = "".join(
        f'<label><input type="radio" name="choice" value="pickup|{html.escape(p["facility_id"])}"> '
        f'{html.escape(p["name"])}, {html.escape(p["address"])} ({p["distance_km"]} km)</label>'
        for p in opts["pickup_locations"])
    body = (f"<p>Choose a new delivery window or a pickup location for parcel <b>{tn}</b>.</p>"
            f'<form method="post"><fieldset><legend>Deliver in a window</legend>{windows}</fieldset>'
            f"<fieldset><legend>Or pick it up at</legend>{pickups}</fieldset>"
            '<button type="submit">Confirm</button></form>')
    return _page(f"Reschedule parcel {tn}", body)


@router.post("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
async def reschedule_form_submit(token: str, request: Request, svc: RescheduleService = Depends(get_service)) -> Any:
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    raw = (form.get("choice") or [""])[0].split("|")
    try:
        if raw[0] == "window" and len(raw) == 3:
            choice = RescheduleChoice.model_validate({"kind": "window", "window_start": raw[1], "window_end": raw[2]})
        elif raw[0] == "pickup" and len(raw) == 2:
            choice = RescheduleChoice(kind="pickup", pickup_facility_id=raw[1])
        else:
            return _page("Choose an option", "<p>Please choose a window or a pickup location.</p>", 422)
        result = await run_in_threadpool(svc.submit, token, choice)
    except ValidationError:
        return _page("Choose an option", "<p>That choice could not be read; please try again.</p>", 422)
    except RescheduleError as exc:
        return _page("Could not reschedule", f"<p>{html.escape(exc.message)}</p>", exc.status)
    what = (f"pickup at {html.escape(result['pickup']['name'])}" if result.get("pickup")
            else "delivery in your chosen window")
    return _page("Done", f"<p>Parcel {html.escape(result['tracking_number'])}: {what}. "
                         "We have sent you a confirmation.</p>", 201)


_CHANNEL_WORDS = {"sms": "text messages", "email": "emails", "push": "app notifications"}
_BAD_LINK = "<p>This unsubscribe link is not valid.</p>"


@router.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe_form(token: str, svc: RescheduleService = Depends(get_service)) -> Any:
    try:
        words = _CHANNEL_WORDS[verify_unsubscribe(token, svc.secret)[1]]
    except BadToken:
        return _page("Link not valid", _BAD_LINK, 404)
    return _page(f"Stop {words}?", f"<p>You will no longer get {words} about your parcels.</p>"
                                   '<form method="post"><button type="submit">Unsubscribe</button></form>')


@router.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe(token: str, svc: RescheduleService = Depends(get_service)) -> Any:
    try:
        recipient_id, channel = verify_unsubscribe(token, svc.secret)
    except BadToken:
        return _page("Link not valid", _BAD_LINK, 404)
    if not await run_in_threadpool(svc.store.opt_out, recipient_id, channel):
        return _page("Link not valid", "<p>We have no such recipient.</p>", 404)
    return _page("Unsubscribed", f"<p>Done: no more {_CHANNEL_WORDS[channel]} about your parcels. "
                                 "Your tracking page still shows where each parcel is.</p>")
