"""The Redis dedupe window, `SET notif:{shipment_id}:{event_type} <event_id> NX EX <window>`.

The key's value is the id of the event that claimed it. That makes the claim re-entrant: a replay
of the same Kafka record after a crash (between the claim and the send) finds its own claim and
goes on, while any other event for the same (shipment, event_type) inside the window is a
duplicate. A failed send releases the key with compare-and-delete, so a later event can still
reach the customer.
"""

from __future__ import annotations

from enum import StrEnum

import redis

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Claim(StrEnum):
    NEW = "new"  # first of its kind inside the window
    OWN = "own"  # this very event claimed it before (a replay)
    TAKEN = "taken"  # another event claimed it: a duplicate, suppressed


def dedupe_key(shipment_id: str, event_type: str) -> str:
    return f"notif:{shipment_id}:{event_type}"


class Dedupe:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._release = client.register_script(_RELEASE)

    def claim(self, shipment_id: str, event_type: str, event_id: str, window_s: int) -> Claim:
        key = dedupe_key(shipment_id, event_type)
        for _ in range(2):
            if self.redis.set(key, event_id, nx=True, ex=window_s):
                return Claim.NEW
            holder = self.redis.get(key)
            if holder is None:
                continue  # expired between SET and GET: try once more
            holder_text = holder.decode() if isinstance(holder, bytes) else str(holder)
            return Claim.OWN if holder_text == event_id else Claim.TAKEN
        return Claim.TAKEN

    def release(self, shipment_id: str, event_type: str, event_id: str) -> bool:
        return bool(self._release(keys=[dedupe_key(shipment_id, event_type)], args=[event_id]))
