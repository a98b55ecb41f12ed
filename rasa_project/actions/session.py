"""A new conversation: keep the call's metadata in slots, greet once, and answer a greeting without repeating it."""

from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, ActiveLoop, AllSlotsReset, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.card_alert import alert_slots, opening

# slot -> metadata keys the bridge may use, compared without case or underscores
METADATA_SLOTS = {
    "channel": ("channel",),
    "call_sid": ("callsid", "messagesid", "sid"),
    "caller_number": ("from", "caller"),
    "called_number": ("to", "called"),
}
_PASSED_OVER = {"slot", "session_started", "user_featurization"}
# Channels whose users write instead of speaking: the responses' `chat: true` variations are theirs.
CHAT_CHANNELS = {"whatsapp", "sms"}


def _squashed(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def session_metadata(tracker: Tracker) -> Dict[str, Any]:
    """The metadata the conversation was opened with: Rasa's `session_started_metadata` slot,
    else the metadata of the latest user message."""
    metadata = tracker.get_slot("session_started_metadata")
    if isinstance(metadata, dict) and metadata:
        return metadata
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            return event.get("metadata") or tracker.latest_message.get("metadata") or {}
    return tracker.latest_message.get("metadata") or {}


def metadata_slots(metadata: Dict[str, Any]) -> List[EventType]:
    by_key = {_squashed(key): value for key, value in metadata.items()}
    events = []
    for slot, keys in METADATA_SLOTS.items():
        value: Optional[Any] = next((by_key[key] for key in keys if by_key.get(key)), None)
        if value is not None:
            events.append(SlotSet(slot, str(value)))
    channel = str(by_key.get("channel") or "").lower()
    events.append(SlotSet("chat", channel in CHAT_CHANNELS))
    return events


def is_repeat_for_opening_message(events: List[Dict[str, Any]]) -> bool:
    """True when this run answers the `/session_start` message that itself opened the conversation.

    Rasa starts a session before logging the first message of a conversation (greeting then), and
    then runs this action once more for the `/session_start` intent: the caller must not hear two
    greetings. The pattern, newest first: user(session_start), action_listen, session_started,
    the greeting, action_session_start.
    """
    newest_first = [event for event in reversed(events) if event.get("event") not in _PASSED_OVER]
    if not newest_first or newest_first[0].get("event") != "user":
        return False
    if (newest_first[0].get("parse_data") or {}).get("intent", {}).get("name") != "session_start":
        return False
    greeted = False
    for event in newest_first[1:]:
        kind, name = event.get("event"), event.get("name")
        if kind == "action" and name == "action_listen":
            continue
        if kind == "bot":
            greeted = True
            continue
        return kind == "action" and name == "action_session_start" and greeted
    return False


class ActionSessionStart(Action):
    def name(self) -> str:
        return "action_session_start"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        metadata = session_metadata(tracker)
        if not is_repeat_for_opening_message(tracker.events):
            first_words = opening(metadata)  # when the business started the conversation (card_alert.py)
            if first_words is None:
                dispatcher.utter_message(response="utter_greet")
            elif first_words:
                dispatcher.utter_message(**first_words)
        # Rasa hands the actions only the latest session's events: the slot remembers the greeting
        # across the session that the opening /session_start message starts again.
        return [
            SessionStarted(),
            *metadata_slots(metadata),
            *alert_slots(metadata),
            SlotSet("greeted", True),
            ActionExecuted("action_listen"),
        ]


def greeted_in_this_answer(events: List[Dict[str, Any]]) -> bool:
    """True when the user's latest message opened a session whose start already greeted them:
    between the previous message and this one, action_session_start ran and the assistant spoke."""
    users = [index for index, event in enumerate(events) if event.get("event") == "user"]
    if not users:
        return False
    since_previous = events[users[-2] + 1 if len(users) > 1 else 0:users[-1]]
    session_started = any(
        event.get("event") == "action" and event.get("name") == "action_session_start" for event in since_previous
    )
    return session_started and any(event.get("event") == "bot" for event in since_previous)


class ActionGreet(Action):
    """A greeting from the user. A conversation opened by "hola" already got the session's greeting
    in this very answer: nothing more. Later in a conversation the full greeting would repeat itself:
    a short prompt instead."""

    def name(self) -> str:
        return "action_greet"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        if greeted_in_this_answer(tracker.events):
            return []
        if tracker.get_slot("greeted"):
            dispatcher.utter_message(response="utter_how_can_i_help")
            return []
        dispatcher.utter_message(response="utter_greet")
        return [SlotSet("greeted", True)]


class ActionEndConversation(Action):
    """The call is over (the bridge's /session_end): close the form and forget the card, saying nothing.

    Not action_restart: a restart starts a new session at once, whose greeting nobody would hear.
    """

    def name(self) -> str:
        return "action_end_conversation"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        return [ActiveLoop(None), AllSlotsReset()]
