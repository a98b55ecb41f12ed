"""The Rasa client's answers to each way Rasa can fail."""
from __future__ import annotations

import pytest

from tests.servers import free_port
from twilio_bridge.rasa.client import RasaClient, RasaError
from twilio_bridge.testing.standin import RasaStandIn


@pytest.mark.parametrize("mode, kind", [("error500", "status"), ("html", "invalid"), ("invalid_json", "invalid"),
                                        ("drop", "unreachable"), ("hang", "timeout")])
def test_each_failure_is_one_error_kind(mode: str, kind: str, standin: RasaStandIn) -> None:
    standin.mode = mode
    client = RasaClient(standin.webhook_url, timeout=0.5)
    with pytest.raises(RasaError) as caught:
        client.send(f"sender-{mode}", "hola")
    assert caught.value.kind == kind  # "timeout": the client gave up before the stand-in's 5 s hang ended
    assert len(standin.received) == 1  # a message Rasa may have acted on is never sent twice


def test_an_unreachable_rasa_fails_fast() -> None:
    client = RasaClient(f"http://127.0.0.1:{free_port()}/webhooks/rest/webhook", timeout=5)
    with pytest.raises(RasaError) as caught:
        client.send("sender-down", "hola")
    assert caught.value.kind == "unreachable"


def test_a_good_answer_and_an_empty_one(standin: RasaStandIn) -> None:
    client = RasaClient(standin.webhook_url, timeout=2)
    assert client.send("s2", "/session_start", {"channel": "voice"})[0]["recipient_id"] == "s2"
    assert standin.received[0]["metadata"] == {"channel": "voice"}
    standin.mode = "empty"
    assert client.send("s2", "hola") == []
