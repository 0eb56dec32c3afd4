"""stack.servers.kafka_cluster_id: ids that Kafka's tools read as a value, never as an option."""

from __future__ import annotations

import base64
import uuid

import pytest

from stack import servers


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # 0b111110.. is '-' in url-safe base64
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    draws = iter([dashed, dashed, plain])
    monkeypatch.setattr(servers.uuid, "uuid4", lambda: next(draws))
    assert servers.kafka_cluster_id() == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")


def test_ids_are_22_url_safe_characters_of_a_16_byte_uuid() -> None:
    for _ in range(2000):
        cid = servers.kafka_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
