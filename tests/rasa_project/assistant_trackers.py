"""Real rasa-sdk trackers and events, shaped as Rasa sends them to the action server, and an action run on them."""

import asyncio
from typing import Any, Dict, List, Optional

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher


def user_event(text: str, intent: str, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {
        "event": "user",
        "text": text,
        "parse_data": {"intent": {"name": intent, "confidence": 1.0}, "entities": [], "text": text},
        "metadata": metadata or {},
    }


def make_tracker(
    slots: Optional[Dict[str, Any]] = None,
    events: Optional[List[Dict[str, Any]]] = None,
    latest_text: str = "",
    latest_intent: str = "",
    active_loop: Optional[Dict[str, Any]] = None,
    sender_id: str = "CA0123456789abcdef",
) -> Tracker:
    latest = {"text": latest_text, "intent": {"name": latest_intent}, "entities": []}
    return Tracker(
        sender_id=sender_id,
        slots=dict(slots or {}),
        latest_message=latest,
        events=list(events or []),
        paused=False,
        followup_action=None,
        active_loop=active_loop or {},
        latest_action_name="action_listen",
    )


def run(action: Any, tracker: Any, domain: Dict[str, Any]) -> tuple:
    """Run a custom action as the action server does: what it said, and the events it returned."""
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, tracker, domain))
    return dispatcher, events


def responses(dispatcher: CollectingDispatcher) -> List[str]:
    return [message["response"] for message in dispatcher.messages]
