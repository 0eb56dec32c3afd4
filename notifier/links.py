"""Unguessable links: the reschedule token carries the shipment id and an HMAC of it under the
tracking secret (topologies/bootstrap.py `tracking_secret`), so the form needs no lookup table and
a guessed or edited token is refused. The unsubscribe token does the same for a recipient and a
channel (the List-Unsubscribe link of every email)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from notifier.rules import CHANNELS


class BadToken(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def reschedule_token(shipment_id: str | uuid.UUID, secret: str | bytes) -> str:
    sid = uuid.UUID(str(shipment_id))
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, b"reschedule:" + sid.bytes, hashlib.sha256).digest()[:16]
    return f"{_b64(sid.bytes)}.{_b64(mac)}"


def verify_token(token: str, secret: str | bytes) -> uuid.UUID:
    """The shipment id of a valid token; BadToken otherwise (constant-time comparison)."""
    try:
        sid_part, _, mac_part = token.partition(".")
        sid = uuid.UUID(bytes=_unb64(sid_part))
    except (ValueError, TypeError):
        raise BadToken("malformed token") from None
    if not hmac.compare_digest(reschedule_token(sid, secret), token):
        raise BadToken("token does not match")
    return sid


def unsubscribe_token(recipient_id: str | uuid.UUID, channel: str, secret: str | bytes) -> str:
    rid = uuid.UUID(str(recipient_id))
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, b"unsubscribe:" + channel.encode() + b":" + rid.bytes, hashlib.sha256).digest()[:16]
    return f"{_b64(rid.bytes)}.{channel}.{_b64(mac)}"


def verify_unsubscribe(token: str, secret: str | bytes) -> tuple[uuid.UUID, str]:
    """(recipient id, channel) of a valid unsubscribe token; BadToken otherwise."""
    try:
        rid_part, channel, _ = token.split(".")
        rid = uuid.UUID(bytes=_unb64(rid_part))
        expected = unsubscribe_token(rid, channel, secret)
    except (ValueError, TypeError):
        raise BadToken("malformed token") from None
    if not hmac.compare_digest(expected, token):
        raise BadToken("token does not match")
    return rid, channel
