"""Credentials of the non-public routes: a bearer token (or X-API-Key header) from settings.

Two roles: `driver` (driver apps: heartbeats, scans) and `operations` (dispatch search, shipment
creation, scans; an operations key also passes every driver route). Public routes take none.
Keys come from settings (`api.driver_keys`, `api.operations_keys`, env PARCEL_API__...); tokens
are compared in constant time.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Literal

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from config.settings import ApiSettings

Role = Literal["driver", "operations"]

_bearer = HTTPBearer(auto_error=False, description="driver or operations API key")
_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def _matches(token: str, keys: list[str]) -> bool:
    return any(secrets.compare_digest(token.encode(), k.encode()) for k in keys if k)


def role_of(token: str | None, api: ApiSettings) -> Role | None:
    if not token:
        return None
    if _matches(token, api.operations_keys):
        return "operations"
    if _matches(token, api.driver_keys):
        return "driver"
    return None


def require(role: Role) -> Callable[..., Role]:
    """A FastAPI dependency: 401 without a known key, 403 when the key's role is not enough."""

    def check(request: Request, bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
              header: str | None = Depends(_header)) -> Role:
        token = bearer.credentials if bearer is not None else header
        got = role_of(token, request.app.state.settings.api)
        if got is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown API key",
                                headers={"WWW-Authenticate": "Bearer"})
        if role == "operations" and got != "operations":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this route needs an operations key")
        return got

    return check
