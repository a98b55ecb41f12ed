"""GET /health, and the Rasa client's answers to each way Rasa can fail."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from twilio_bridge.rasa_client import RasaClient, RasaError
from twilio_bridge.standin import RasaStandIn
from twilio_bridge.state import RedisStore

from .servers import free_port, redis_server


def test_health_reports_rasa_and_state(bridge_url: str, reconfigure) -> None:
    healthy = requests.get(bridge_url + "/health", timeout=5).json()
    assert healthy["status"] == "ok" and healthy["rasa"]["reachable"] and healthy["state"]["reachable"]
    assert healthy["config"]["signature_validation"] is True
    down = reconfigure(rasa_webhook_url=f"http://127.0.0.1:{free_port()}/webhooks/rest/webhook")
    degraded = requests.get(down.base_url + "/health", timeout=5).json()
    assert degraded["status"] == "degraded" and degraded["rasa"]["reachable"] is False


@pytest.mark.parametrize("mode, kind", [("error500", "status"), ("html", "invalid"), ("invalid_json", "invalid"),
                                        ("drop", "unreachable"), ("hang", "timeout")])
def test_each_failure_is_one_error_kind(mode: str, kind: str, standin: RasaStandIn) -> None:
    standin.mode = mode
    client = RasaClient(standin.webhook_url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RasaError) as caught:
        client.send(f"sender-{mode}", "hola")
    assert caught.value.kind == kind and time.monotonic() - started < 2
    assert len(standin.received) == 1  # a message Rasa may have acted on is never sent twice


def test_an_unreachable_rasa_fails_fast() -> None:
    client = RasaClient(f"http://127.0.0.1:{free_port()}/webhooks/rest/webhook", timeout=5)
    started = time.monotonic()
    with pytest.raises(RasaError) as caught:
        client.send("sender-down", "hola")
    assert caught.value.kind == "unreachable" and time.monotonic() - started < 2


def test_a_good_answer_and_an_empty_one(standin: RasaStandIn) -> None:
    client = RasaClient(standin.webhook_url, timeout=2)
    assert client.send("s2", "/session_start", {"channel": "voice"})[0]["recipient_id"] == "s2"
    assert standin.received[0]["metadata"] == {"channel": "voice"}
    standin.mode = "empty"
    assert client.send("s2", "hola") == []


def test_redis_store_behaves_like_sqlite(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        store = RedisStore(url)
        assert store.ping()
        store.put("a", {"n": 1}, ttl=60)
        assert store.get("a") == {"n": 1} and not store.add("a", {"n": 2}, ttl=60)
        assert store.add("b", {"n": 3}, ttl=0.05)
        time.sleep(0.1)
        assert store.get("b") is None and store.add("b", {"n": 4}, ttl=60)
        assert [store.incr("c", ttl=0.1) for _ in range(3)] == [1, 2, 3]
        time.sleep(0.15)
        assert store.incr("c", ttl=60) == 1
        store.delete("a")
        assert store.get("a") is None
