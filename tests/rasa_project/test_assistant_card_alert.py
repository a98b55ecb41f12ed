"""The card alert the business starts: read from the bridge's metadata, opened with, answered (unblock, or keep
blocked and a new card), with rasa-sdk's own dispatcher and tracker, the demo store and the HTTP contract."""

from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from actions.alert_service import HttpAlertService, SqliteAlertService
from actions.card_alert import (
    ActionKeepCardBlocked,
    ActionOrderReplacement,
    ActionReadOutboundAlert,
    ActionUnblockAlertedCard,
    card_alert,
)
from actions.card_service import BlockRequest, BlockResult, CardNotFound, CardServiceError
from actions.session import ActionSessionStart
from assistant_trackers import make_tracker, responses, run, user_event
from rasa_sdk.events import SlotSet
from test_assistant_card_service import FakeCardService, card_service_url  # noqa: F401  (a fixture)

ALERT = {"reason": "suspicious_charge", "card_last_four": "1234", "merchant": "Tienda Ejemplo"}
# As the bridge sends them: an outbound call's start, and a WhatsApp reply to the alert's template.
CALL_START = {"channel": "voice", "call_sid": "CA42", "from": "+14155550199", "to": "+5215512345678",
              "direction": "outbound-api", "outbound_id": "OC1", "outbound_context": ALERT, "input": "call_start"}
TEMPLATE_REPLY = {"channel": "whatsapp", "message_sid": "SM7", "from": "whatsapp:+5215512345678", "input": "text",
                  "last_notification": {"message_id": "OM1", "content_sid": "HX" + "b" * 32,
                                        "variables": {"1": "1234"}, "context": ALERT,
                                        "sent_at": "2026-11-30T07:00:00Z"}}
ALERT_SLOTS = [SlotSet("outbound_alert", "suspicious_charge"), SlotSet("alert_card_last_four", "1234")]



@pytest.mark.parametrize("metadata, digits", [
    (CALL_START, "1234"),
    (TEMPLATE_REPLY, "1234"),
    ({**CALL_START, "outbound_context": {**ALERT, "reason": "appointment"}}, None),
    ({**CALL_START, "outbound_context": {**ALERT, "card_last_four": "12345"}}, None),
    ({**CALL_START, "outbound_context": "card 1234"}, None),
    ({"channel": "voice", "direction": "inbound"}, None),
    (None, None),
])
def test_an_alert_is_read_from_the_call_context_or_the_notification(metadata: Any, digits: Optional[str]) -> None:
    assert card_alert(metadata) == digits


def test_an_outbound_call_opens_with_the_alert_instead_of_the_greeting(domain: Dict[str, Any]) -> None:
    dispatcher, events = run(ActionSessionStart(), make_tracker(slots={"session_started_metadata": CALL_START}), domain)
    assert dispatcher.messages[0]["response"] == "utter_card_alert" and dispatcher.messages[0]["digits"] == "1 2 3 4"
    assert len(dispatcher.messages) == 1
    assert all(slot in events for slot in ALERT_SLOTS)


def test_a_reply_to_the_notification_opens_with_no_greeting(domain: Dict[str, Any]) -> None:
    tracker = make_tracker(events=[user_event("sí, fui yo", "affirm", TEMPLATE_REPLY)])
    dispatcher, events = run(ActionSessionStart(), tracker, domain)
    assert dispatcher.messages == []
    assert all(slot in events for slot in ALERT_SLOTS)


def test_a_reply_within_a_conversation_sets_the_alert_and_other_messages_leave_it(domain: Dict[str, Any]) -> None:
    answering = make_tracker()
    answering.latest_message["metadata"] = TEMPLATE_REPLY
    assert run(ActionReadOutboundAlert(), answering, domain)[1] == ALERT_SLOTS
    later = make_tracker(slots={"outbound_alert": "suspicious_charge"})
    later.latest_message["metadata"] = {"channel": "whatsapp", "input": "text"}
    assert run(ActionReadOutboundAlert(), later, domain)[1] == []


class RecordingAlertService:
    def __init__(self, failure: Optional[Exception] = None) -> None:
        self.failure = failure
        self.calls: List[tuple] = []

    def _record(self, what: str, request: BlockRequest) -> None:
        self.calls.append((what, request.last_four))
        if self.failure is not None:
            raise self.failure

    def block(self, request: BlockRequest) -> BlockResult:
        self._record("block", request)
        return BlockResult(request.last_four, "11112222", already_blocked=True)

    def unblock(self, request: BlockRequest) -> None:
        self._record("unblock", request)

    def order_replacement(self, request: BlockRequest) -> str:
        self._record("replacement", request)
        return "48213067"


ALERTED = {"outbound_alert": "suspicious_charge", "alert_card_last_four": "1234", "channel": "voice"}


def test_yes_unblocks_the_card_and_closes_the_alert(domain: Dict[str, Any]) -> None:
    service = RecordingAlertService()
    dispatcher, events = run(ActionUnblockAlertedCard(service), make_tracker(slots=ALERTED), domain)
    assert responses(dispatcher) == ["utter_card_unblocked", "utter_anything_else"]
    assert dispatcher.messages[0]["digits"] == "1 2 3 4" and service.calls == [("unblock", "1234")]
    assert events == [SlotSet("outbound_alert", None), SlotSet("alert_card_last_four", None)]


def test_no_keeps_the_card_blocked_and_offers_a_new_one(domain: Dict[str, Any]) -> None:
    service = RecordingAlertService()
    dispatcher, events = run(ActionKeepCardBlocked(service), make_tracker(slots=ALERTED), domain)
    assert responses(dispatcher) == ["utter_card_kept_blocked"] and service.calls == [("block", "1234")]
    assert events == [SlotSet("outbound_alert", None)]
    offered = domain["responses"]["utter_card_kept_blocked"][0]["buttons"]
    assert [b["payload"] for b in offered] == ["/affirm", "/deny"]


def test_a_new_card_is_ordered_with_its_reference_read_in_groups(domain: Dict[str, Any]) -> None:
    service = RecordingAlertService()
    tracker = make_tracker(slots={"alert_card_last_four": "1234"})
    dispatcher, events = run(ActionOrderReplacement(service), tracker, domain)
    assert responses(dispatcher) == ["utter_replacement_ordered", "utter_anything_else"]
    assert dispatcher.messages[0]["reference"] == "4 8 2 1, 3 0 6 7"
    assert events == [SlotSet("alert_card_last_four", None)]


@pytest.mark.parametrize("action", [ActionUnblockAlertedCard, ActionKeepCardBlocked, ActionOrderReplacement])
@pytest.mark.parametrize("failure", [CardServiceError("down", status=503), CardNotFound("1234")])
def test_a_card_service_failure_is_explained_and_handed_off(
        domain: Dict[str, Any], action: Any, failure: Exception) -> None:
    dispatcher, _ = run(action(RecordingAlertService(failure)), make_tracker(slots=ALERTED), domain)
    assert responses(dispatcher) == ["utter_alert_trouble"]
    assert domain["responses"]["utter_alert_trouble"][0]["custom"] == {"handoff": True}


def test_without_an_alert_nothing_is_changed_and_a_person_takes_over(domain: Dict[str, Any]) -> None:
    service = RecordingAlertService()
    dispatcher, _ = run(ActionUnblockAlertedCard(service), make_tracker(slots={}), domain)
    assert responses(dispatcher) == ["utter_alert_trouble"] and service.calls == []


def test_the_demo_store_unblocks_and_orders_one_new_card(tmp_path: Path) -> None:
    store = SqliteAlertService(tmp_path / "cards.db")
    first = store.block(BlockRequest("1234"))
    store.unblock(BlockRequest("1234"))
    again = store.block(BlockRequest("1234"))
    assert not again.already_blocked and again.reference != first.reference
    reference = store.order_replacement(BlockRequest("1234"))
    assert len(reference) == 8 and store.order_replacement(BlockRequest("1234")) == reference
    with pytest.raises(CardNotFound):
        store.unblock(BlockRequest("0000"))
    with pytest.raises(CardNotFound):
        store.order_replacement(BlockRequest("0000"))


def test_the_http_service_posts_the_alert_contract(card_service_url: str) -> None:  # noqa: F811
    service = HttpAlertService(card_service_url, timeout=2)
    request = BlockRequest("1234", caller="+5215512345678", channel="voice", conversation_id="CA1")
    service.unblock(request)
    assert service.order_replacement(request) == "12345678"
    body = {"caller": "+5215512345678", "channel": "voice", "conversation_id": "CA1"}
    assert FakeCardService.received == [("/cards/1234/unblock", body), ("/cards/1234/replacement", body)]
    with pytest.raises(CardNotFound):
        service.unblock(BlockRequest("0000"))
    with pytest.raises(CardServiceError):
        service.order_replacement(BlockRequest("5000"))
