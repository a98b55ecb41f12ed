"""The action server started for real and called over HTTP the way Rasa calls it."""

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
from assistant_processes import action_server as start_action_server
from assistant_trackers import user_event

from tests.servers import free_port

CALL_METADATA = {"channel": "voice", "call_sid": "CA42", "from": "+525512345678", "to": "+525500000000"}


@pytest.fixture(scope="module")
def action_server(project_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    environment = dict(os.environ)
    environment.pop("CARD_SERVICE_URL", None)
    environment["CARD_SERVICE_DB"] = str(tmp_path_factory.mktemp("cards") / "cards.db")
    log = tmp_path_factory.mktemp("logs") / "action_server.log"
    with start_action_server(project_dir, port, environment, log):
        yield f"http://127.0.0.1:{port}"


def call(url: str, domain: Dict[str, Any], action: str, slots: Optional[Dict[str, Any]] = None,
         events: Optional[List[Dict[str, Any]]] = None, latest_message: Optional[Dict[str, Any]] = None,
         active_loop: Optional[Dict[str, Any]] = None) -> requests.Response:
    body = {
        "next_action": action,
        "sender_id": "CA42",
        "version": "3.21.0",
        "tracker": {
            "sender_id": "CA42",
            "slots": slots or {},
            "latest_message": latest_message or {"text": "", "intent": {}, "entities": []},
            "latest_event_time": 1700000000.0,
            "followup_action": None,
            "paused": False,
            "events": events or [],
            "latest_input_channel": "rest",
            "active_loop": active_loop or {},
            "latest_action": {"action_name": "action_listen"},
            "latest_action_name": "action_listen",
        },
        "domain": domain,
    }
    return requests.post(f"{url}/webhook", json=body, timeout=10)


def test_every_custom_action_in_the_domain_is_served(action_server: str, domain: Dict[str, Any]) -> None:
    served = {item["name"] for item in requests.get(f"{action_server}/actions", timeout=5).json()}
    assert set(domain["actions"]) <= served


def test_session_start_over_http(action_server: str, domain: Dict[str, Any]) -> None:
    answer = call(action_server, domain, "action_session_start",
                  slots={"session_started_metadata": CALL_METADATA},
                  events=[{"event": "slot", "name": "session_started_metadata", "value": CALL_METADATA}])
    assert answer.status_code == 200
    body = answer.json()
    assert [r["response"] for r in body["responses"]] == ["utter_greet"]
    kinds = [event["event"] for event in body["events"]]
    assert kinds[0] == "session_started" and kinds[-1] == "action"
    slots = {event["name"]: event["value"] for event in body["events"] if event["event"] == "slot"}
    assert slots["call_sid"] == "CA42" and slots["caller_number"] == "+525512345678"


def test_form_validation_over_http(action_server: str, domain: Dict[str, Any]) -> None:
    spoken = "uno dos tres cuatro"
    answer = call(
        action_server, domain, "validate_card_form",
        slots={"card_last_four": spoken, "requested_slot": "card_last_four"},
        events=[user_event(spoken, "inform_card_digits"),
                {"event": "slot", "name": "card_last_four", "value": spoken}],
        latest_message={"text": spoken, "intent": {"name": "inform_card_digits"}, "entities": []},
        active_loop={"name": "card_form"},
    )
    assert answer.status_code == 200
    slots = {e["name"]: e["value"] for e in answer.json()["events"] if e["event"] == "slot"}
    assert slots["card_last_four"] == "1234"


def test_blocking_over_http_is_idempotent(action_server: str, domain: Dict[str, Any]) -> None:
    slots = {"card_last_four": "5678", "caller_number": "+525512345678", "channel": "voice"}
    first = call(action_server, domain, "action_block_card", slots=slots).json()
    again = call(action_server, domain, "action_block_card", slots=slots).json()
    assert [r["response"] for r in first["responses"]] == ["utter_card_blocked", "utter_anything_else"]
    assert [r["response"] for r in again["responses"]] == ["utter_card_already_blocked", "utter_anything_else"]
    assert first["responses"][0]["reference"] == again["responses"][0]["reference"]


def test_unknown_card_over_http_hands_off(action_server: str, domain: Dict[str, Any]) -> None:
    body = call(action_server, domain, "action_block_card", slots={"card_last_four": "0000"}).json()
    assert [r["response"] for r in body["responses"]] == ["utter_card_not_found"]


def test_unknown_action_is_a_404(action_server: str, domain: Dict[str, Any]) -> None:
    assert call(action_server, domain, "action_that_does_not_exist").status_code == 404
