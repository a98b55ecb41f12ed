"""Every custom action, run with rasa-sdk's own dispatcher and tracker."""

from typing import Any, Dict, List

import pytest
from actions.card_actions import (
    ActionBlockCard,
    ActionConfirmCard,
    ActionDiscardCard,
    ValidateCardForm,
)
from actions.card_service import BlockRequest, BlockResult, CardNotFound, CardServiceError
from actions.fallback import ActionHandleFallback
from actions.session import ActionEndConversation, ActionGreet, ActionSessionStart
from assistant_trackers import make_tracker, responses, run, user_event
from rasa_sdk.events import ActionExecuted, ActiveLoop, AllSlotsReset, SessionStarted, SlotSet
from werkzeug.datastructures import MultiDict

from twilio_bridge.voice.call import call_metadata
from twilio_bridge.whatsapp.conversation import Inbound

CALL_METADATA = {"channel": "voice", "call_sid": "CA42", "from": "+525512345678", "to": "+525500000000"}



# action_session_start

def test_session_start_keeps_call_metadata_and_greets(domain: Dict[str, Any]) -> None:
    tracker = make_tracker(slots={"session_started_metadata": CALL_METADATA})
    dispatcher, events = run(ActionSessionStart(), tracker, domain)
    assert responses(dispatcher) == ["utter_greet"]
    assert events[0] == SessionStarted()
    assert events[-1] == ActionExecuted("action_listen")
    assert SlotSet("channel", "voice") in events
    assert SlotSet("call_sid", "CA42") in events
    assert SlotSet("caller_number", "+525512345678") in events
    assert SlotSet("called_number", "+525500000000") in events


def test_session_start_reads_twilio_spelled_metadata_of_the_latest_message(domain: Dict[str, Any]) -> None:
    metadata = {"Channel": "whatsapp", "MessageSid": "SM7", "From": "whatsapp:+5215512345678"}
    tracker = make_tracker(events=[user_event("hola", "greet", metadata)])
    _, events = run(ActionSessionStart(), tracker, domain)
    slots = {event["name"]: event["value"] for event in events if event["event"] == "slot"}
    assert slots == {"channel": "whatsapp", "call_sid": "SM7", "caller_number": "whatsapp:+5215512345678",
                     "chat": True, "greeted": True}


VOICE_FORM = {"CallSid": "CA42", "AccountSid": "AC1", "From": "+525512345678", "To": "+525500000000",
              "Direction": "inbound", "FromCountry": "MX"}
WHATSAPP_FORM = {"MessageSid": "SM7", "AccountSid": "AC1", "From": "whatsapp:+5215512345678",
                 "To": "whatsapp:+14155238886", "Body": "hola", "ProfileName": "Ana", "WaId": "5215512345678"}


@pytest.mark.parametrize("metadata, expected", [
    (call_metadata(MultiDict(VOICE_FORM), input="call_start"),
     {"channel": "voice", "call_sid": "CA42", "caller_number": "+525512345678", "called_number": "+525500000000",
      "chat": False, "greeted": True}),
    (Inbound.from_form(MultiDict(WHATSAPP_FORM)).metadata("text"),
     {"channel": "whatsapp", "call_sid": "SM7", "caller_number": "whatsapp:+5215512345678",
      "called_number": "whatsapp:+14155238886", "chat": True, "greeted": True}),
], ids=["voice", "whatsapp"])
def test_session_start_reads_the_metadata_the_bridge_sends(
    domain: Dict[str, Any], metadata: Dict[str, Any], expected: Dict[str, str],
) -> None:
    tracker = make_tracker(slots={"session_started_metadata": metadata})
    _, events = run(ActionSessionStart(), tracker, domain)
    assert {event["name"]: event["value"] for event in events if event["event"] == "slot"} == expected


def test_session_start_greets_once_when_the_conversation_opens_with_session_start(
    domain: Dict[str, Any],
) -> None:
    opened = [
        {"event": "slot", "name": "session_started_metadata", "value": CALL_METADATA},
        {"event": "action", "name": "action_session_start"},
        {"event": "bot", "text": "Hola, soy el asistente de tarjetas."},
        {"event": "session_started"},
        {"event": "slot", "name": "call_sid", "value": "CA42"},
        {"event": "action", "name": "action_listen"},
        user_event("/session_start", "session_start", CALL_METADATA),
    ]
    dispatcher, events = run(ActionSessionStart(), make_tracker(events=opened), domain)
    assert dispatcher.messages == []
    assert SlotSet("call_sid", "CA42") in events


def test_session_start_asked_for_mid_conversation_greets_again(domain: Dict[str, Any]) -> None:
    history = [
        {"event": "action", "name": "action_session_start"},
        {"event": "session_started"},
        {"event": "action", "name": "action_listen"},
        user_event("hola", "greet"),
        {"event": "action", "name": "utter_greet"},
        {"event": "bot", "text": "Hola."},
        {"event": "action", "name": "action_listen"},
        user_event("/session_start", "session_start"),
    ]
    dispatcher, _ = run(ActionSessionStart(), make_tracker(events=history), domain)
    assert responses(dispatcher) == ["utter_greet"]


# action_greet

OPENED_BY_HOLA = [
    {"event": "action", "name": "action_session_start"},
    {"event": "bot", "text": "Hola, soy el asistente de tarjetas."},
    {"event": "session_started"},
    {"event": "slot", "name": "greeted", "value": True},
    {"event": "action", "name": "action_listen"},
    user_event("hola", "greet"),
]


def test_a_hello_that_opened_the_conversation_gets_only_the_sessions_greeting(domain: Dict[str, Any]) -> None:
    dispatcher, events = run(ActionGreet(), make_tracker(slots={"greeted": True}, events=OPENED_BY_HOLA), domain)
    assert dispatcher.messages == [] and events == []


def test_a_hello_after_the_greeting_gets_a_short_prompt(domain: Dict[str, Any]) -> None:
    later = [{"event": "action", "name": "action_session_start"}, {"event": "session_started"},
             {"event": "action", "name": "action_listen"}, user_event("/session_start", "session_start"),
             {"event": "action", "name": "action_listen"}, user_event("hola", "greet")]
    dispatcher, _ = run(ActionGreet(), make_tracker(slots={"greeted": True}, events=later), domain)
    assert responses(dispatcher) == ["utter_how_can_i_help"]


def test_a_hello_before_any_greeting_is_greeted(domain: Dict[str, Any]) -> None:
    dispatcher, events = run(ActionGreet(), make_tracker(events=[user_event("hola", "greet")]), domain)
    assert responses(dispatcher) == ["utter_greet"]
    assert events == [SlotSet("greeted", True)]


# action_end_conversation

def test_the_end_of_a_call_closes_the_form_and_forgets_everything_silently(domain: Dict[str, Any]) -> None:
    tracker = make_tracker(slots={"card_digit_attempts": 1.0, "requested_slot": "card_last_four"},
                           active_loop={"name": "card_form"})
    dispatcher, events = run(ActionEndConversation(), tracker, domain)
    assert dispatcher.messages == []
    assert events == [ActiveLoop(None), AllSlotsReset()]


# validate_card_form

def validate(domain: Dict[str, Any], text: str, attempts: Any = None) -> tuple:
    tracker = make_tracker(
        slots={"card_last_four": text, "card_digit_attempts": attempts, "requested_slot": "card_last_four"},
        events=[user_event(text, "inform_card_digits"), {"event": "slot", "name": "card_last_four", "value": text}],
        latest_text=text,
        active_loop={"name": "card_form"},
    )
    return run(ValidateCardForm(), tracker, domain)


def test_spoken_digits_are_normalised(domain: Dict[str, Any]) -> None:
    dispatcher, events = validate(domain, "uno dos tres cuatro")
    assert SlotSet("card_last_four", "1234") in events
    assert dispatcher.messages == []


def test_first_misunderstanding_asks_again(domain: Dict[str, Any]) -> None:
    dispatcher, events = validate(domain, "no me acuerdo")
    assert responses(dispatcher) == ["utter_digits_not_understood"]
    assert SlotSet("card_last_four", None) in events
    assert SlotSet("card_digit_attempts", 1.0) in events
    assert SlotSet("requested_slot", None) not in events


def test_second_misunderstanding_ends_the_form(domain: Dict[str, Any]) -> None:
    dispatcher, events = validate(domain, "123", attempts=1.0)
    assert dispatcher.messages == []
    assert SlotSet("card_last_four", None) in events
    assert SlotSet("requested_slot", None) in events


# action_confirm_card, action_discard_card

def test_confirmation_reads_the_digits_one_by_one_with_yes_no_buttons(domain: Dict[str, Any]) -> None:
    dispatcher, events = run(ActionConfirmCard(), make_tracker(slots={"card_last_four": "1234"}), domain)
    assert dispatcher.messages[0]["response"] == "utter_confirm_card"
    assert dispatcher.messages[0]["digits"] == "1 2 3 4"
    assert events == [SlotSet("card_digit_attempts", None)]


def test_confirmation_without_digits_hands_off(domain: Dict[str, Any]) -> None:
    dispatcher, _ = run(ActionConfirmCard(), make_tracker(slots={"card_last_four": None}), domain)
    assert responses(dispatcher) == ["utter_digits_handoff"]


def test_discarding_blocks_nothing_and_forgets_the_digits(domain: Dict[str, Any]) -> None:
    dispatcher, events = run(ActionDiscardCard(), make_tracker(slots={"card_last_four": "1234"}), domain)
    assert responses(dispatcher) == ["utter_card_not_blocked", "utter_anything_else"]
    assert events == [SlotSet("card_last_four", None)]


# action_block_card

class RecordingCardService:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: List[BlockRequest] = []

    def block(self, request: BlockRequest) -> BlockResult:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


CALL_SLOTS = {"card_last_four": "1234", "caller_number": "+525512345678", "channel": "voice"}


def test_block_reads_back_the_reference_in_groups(domain: Dict[str, Any]) -> None:
    service = RecordingCardService(BlockResult("1234", "48213067", already_blocked=False))
    dispatcher, events = run(ActionBlockCard(service), make_tracker(slots=CALL_SLOTS), domain)
    assert responses(dispatcher) == ["utter_card_blocked", "utter_anything_else"]
    assert dispatcher.messages[0]["reference"] == "4 8 2 1, 3 0 6 7"
    assert dispatcher.messages[0]["digits"] == "1 2 3 4"
    assert service.requests == [BlockRequest("1234", "+525512345678", "voice", "CA0123456789abcdef")]
    assert events == [SlotSet("card_last_four", None)]


def test_block_of_a_blocked_card_says_so(domain: Dict[str, Any]) -> None:
    service = RecordingCardService(BlockResult("1234", "48213067", already_blocked=True))
    dispatcher, _ = run(ActionBlockCard(service), make_tracker(slots=CALL_SLOTS), domain)
    assert responses(dispatcher) == ["utter_card_already_blocked", "utter_anything_else"]


def test_unknown_card_is_explained_and_handed_off(domain: Dict[str, Any]) -> None:
    service = RecordingCardService(CardNotFound("1234"))
    dispatcher, _ = run(ActionBlockCard(service), make_tracker(slots=CALL_SLOTS), domain)
    assert responses(dispatcher) == ["utter_card_not_found"]
    assert dispatcher.messages[0]["digits"] == "1 2 3 4"


def test_service_error_is_explained_and_handed_off(domain: Dict[str, Any]) -> None:
    service = RecordingCardService(CardServiceError("down", status=503))
    dispatcher, _ = run(ActionBlockCard(service), make_tracker(slots=CALL_SLOTS), domain)
    assert responses(dispatcher) == ["utter_card_service_down"]


def test_block_uses_the_demo_store_by_default_and_is_idempotent(domain: Dict[str, Any]) -> None:
    first, _ = run(ActionBlockCard(), make_tracker(slots=CALL_SLOTS), domain)
    again, _ = run(ActionBlockCard(), make_tracker(slots=CALL_SLOTS), domain)
    assert responses(first)[0] == "utter_card_blocked"
    assert responses(again)[0] == "utter_card_already_blocked"
    assert again.messages[0]["reference"] == first.messages[0]["reference"]


def test_block_without_digits_hands_off(domain: Dict[str, Any]) -> None:
    service = RecordingCardService(BlockResult("1234", "1", False))
    dispatcher, _ = run(ActionBlockCard(service), make_tracker(slots={}), domain)
    assert responses(dispatcher) == ["utter_digits_handoff"]
    assert service.requests == []


# action_handle_fallback

def test_first_fallback_helps_with_the_menu(domain: Dict[str, Any]) -> None:
    events = [user_event("hola", "greet"), {"event": "bot"}, user_event("blablá", "nlu_fallback")]
    dispatcher, _ = run(ActionHandleFallback(), make_tracker(events=events), domain)
    assert responses(dispatcher) == ["utter_not_understood", "utter_menu"]


def test_second_fallback_in_a_row_hands_off(domain: Dict[str, Any]) -> None:
    events = [
        user_event("blablá", "nlu_fallback"),
        {"event": "action", "name": "action_handle_fallback"},
        {"event": "bot"},
        {"event": "action", "name": "action_listen"},
        user_event("otra vez blablá", "nlu_fallback"),
    ]
    dispatcher, _ = run(ActionHandleFallback(), make_tracker(events=events), domain)
    assert responses(dispatcher) == ["utter_not_understood_handoff"]


def test_fallbacks_of_an_earlier_session_do_not_count(domain: Dict[str, Any]) -> None:
    events = [user_event("blablá", "nlu_fallback"), {"event": "session_started"},
              user_event("otra vez blablá", "nlu_fallback")]
    dispatcher, _ = run(ActionHandleFallback(), make_tracker(events=events), domain)
    assert responses(dispatcher) == ["utter_not_understood", "utter_menu"]
