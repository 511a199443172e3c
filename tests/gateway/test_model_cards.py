"""`/v1/models` on the gateway: the card fields a client (the web console) shows, and availability.

An instance is registered through the real registration route; the listing does not contact it.
"""

from __future__ import annotations

import httpx

from dalston.registration import spec_digest
from tests.gateway.conftest import INTERNAL_TOKEN, running_gateway
from tests.fixtures.serving import AUTH


def test_cards_carry_stage_languages_hardware_aliases_and_availability(catalog, keys_file):
    with running_gateway(catalog, keys_file, heartbeat_timeout=30.0) as (gw, _):
        body = {"engine_id": "whisper-base", "url": "http://127.0.0.1:9", "max_concurrency": 2,
                "spec_digest": spec_digest(catalog.get("whisper-base").spec)}
        assert httpx.post(f"{gw}/internal/v1/instances", json=body,
                          headers={"authorization": f"Bearer {INTERNAL_TOKEN}"}).status_code == 201
        cards = {m["id"]: m for m in httpx.get(f"{gw}/v1/models", headers=AUTH).json()["data"]}
    base = cards["whisper-base"]
    assert base["available"] is True and base["live_instances"] == 1 and base["aliases"] == ["fast"]
    assert base["stage"] == "transcribe" and base["languages"] == ["multilingual"] and base["streaming"] is False
    assert base["hardware"] == {"gpu": "optional", "cpu": True} and base["word_timestamps"] is True
    realtime = cards["whisper-streaming-base"]
    assert realtime["stage"] == "realtime" and realtime["streaming"] is True and realtime["available"] is False
    parakeet = cards["parakeet-0.6b"]
    assert parakeet["languages"] == ["en"] and parakeet["hardware"]["gpu"] in ("optional", "required")
