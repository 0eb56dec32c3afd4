"""HTTP surface of the route optimizer, mounted by the API app (api/app.py)."""

from fastapi import APIRouter

router = APIRouter(tags=["routing"])
