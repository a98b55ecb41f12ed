"""A card alert the business started: "we blocked your card ending in 1234 after a suspicious charge, was it you?".

The bridge tells the assistant what it is answering: an outbound call's `/session_start` carries metadata
`outbound_context`, and a WhatsApp or SMS reply to a notification carries `last_notification` (with the
operator's `context`). A context with `reason: suspicious_charge` and the card's `card_last_four` is an
alert: the slots `outbound_alert` and `alert_card_last_four` hold it until the customer has answered.
Yes: the card is unblocked. No: it stays blocked, and a new card is offered.
"""

import asyncio
import logging
import re
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.alert_service import AlertCardService, alert_service_from_env
from actions.card_service import BlockRequest, CardNotFound, CardServiceError
from actions.spoken import in_groups, one_by_one

logger = logging.getLogger(__name__)

SUSPICIOUS_CHARGE = "suspicious_charge"  # the only alert this assistant answers


def card_alert(metadata: Optional[Dict[str, Any]]) -> Optional[str]:
    """The card's last four digits when the message answers a suspicious-charge alert, else None."""
    if not isinstance(metadata, dict):
        return None
    notification = metadata.get("last_notification")
    context = metadata.get("outbound_context")
    if context is None and isinstance(notification, dict):
        context = notification.get("context")
    if not isinstance(context, dict) or context.get("reason") != SUSPICIOUS_CHARGE:
        return None
    digits = str(context.get("card_last_four", ""))
    return digits if re.fullmatch(r"\d{4}", digits) else None


def alert_slots(metadata: Optional[Dict[str, Any]]) -> List[EventType]:
    digits = card_alert(metadata)
    if digits is None:
        return []
    return [SlotSet("outbound_alert", SUSPICIOUS_CHARGE), SlotSet("alert_card_last_four", digits)]


def opening(metadata: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A conversation's first words when the business started it: the alert, for a call it placed; nothing for
    a reply to its notification (which was the first words). None when the customer started the conversation."""
    digits = card_alert(metadata)
    if digits is None:
        return None
    if isinstance(metadata, dict) and metadata.get("outbound_context") is not None:
        return dict(response="utter_card_alert", digits=one_by_one(digits))
    return {}


class ActionReadOutboundAlert(Action):
    """The slot mapping of `outbound_alert`: after each message, an alert the message carries (a reply to a
    notification in a conversation already under way) is remembered; any other message changes nothing."""

    def name(self) -> str:
        return "action_read_outbound_alert"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        return alert_slots(tracker.latest_message.get("metadata"))


class _UsesAlertService:
    """The card service an alert's answer needs (not an Action: rasa-sdk registers every Action subclass)."""

    def __init__(self, service: Optional[AlertCardService] = None) -> None:
        self._service = service

    @property
    def service(self) -> AlertCardService:
        if self._service is None:
            self._service = alert_service_from_env()
        return self._service

    @staticmethod
    def request(tracker: Tracker) -> Optional[BlockRequest]:
        digits = tracker.get_slot("alert_card_last_four")
        if not digits:
            return None
        return BlockRequest(last_four=digits, caller=tracker.get_slot("caller_number"),
                            channel=tracker.get_slot("channel"), conversation_id=tracker.sender_id)


class ActionUnblockAlertedCard(_UsesAlertService, Action):
    """It was the customer: the card works again."""

    def name(self) -> str:
        return "action_unblock_alerted_card"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        done = [SlotSet("outbound_alert", None), SlotSet("alert_card_last_four", None)]
        request = self.request(tracker)
        if request is None:
            dispatcher.utter_message(response="utter_alert_trouble")
            return done
        try:
            await asyncio.to_thread(self.service.unblock, request)
        except (CardNotFound, CardServiceError) as error:
            logger.warning("card_service.unblock.failed: %s", error)
            dispatcher.utter_message(response="utter_alert_trouble")
            return done
        dispatcher.utter_message(response="utter_card_unblocked", digits=one_by_one(request.last_four))
        dispatcher.utter_message(response="utter_anything_else")
        return done


class ActionKeepCardBlocked(_UsesAlertService, Action):
    """It was not the customer: the card stays blocked (blocking is idempotent), and a new card is offered."""

    def name(self) -> str:
        return "action_keep_card_blocked"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        request = self.request(tracker)
        if request is None:
            dispatcher.utter_message(response="utter_alert_trouble")
            return [SlotSet("outbound_alert", None)]
        try:
            await asyncio.to_thread(self.service.block, request)
        except (CardNotFound, CardServiceError) as error:
            logger.warning("card_service.block.failed: %s", error)
            dispatcher.utter_message(response="utter_alert_trouble")
            return [SlotSet("outbound_alert", None), SlotSet("alert_card_last_four", None)]
        dispatcher.utter_message(response="utter_card_kept_blocked", digits=one_by_one(request.last_four))
        return [SlotSet("outbound_alert", None)]  # the card's digits stay, for the new card


class ActionOrderReplacement(_UsesAlertService, Action):
    def name(self) -> str:
        return "action_order_replacement"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        done = [SlotSet("alert_card_last_four", None)]
        request = self.request(tracker)
        if request is None:
            dispatcher.utter_message(response="utter_alert_trouble")
            return done
        try:
            reference = await asyncio.to_thread(self.service.order_replacement, request)
        except (CardNotFound, CardServiceError) as error:
            logger.warning("card_service.replacement.failed: %s", error)
            dispatcher.utter_message(response="utter_alert_trouble")
            return done
        dispatcher.utter_message(response="utter_replacement_ordered", reference=in_groups(reference))
        dispatcher.utter_message(response="utter_anything_else")
        return done
