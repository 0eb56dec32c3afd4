"""HTTP surface of the notifier (reschedule flow, operations views), mounted by the API app."""

from fastapi import APIRouter

router = APIRouter(tags=["notifier"])
