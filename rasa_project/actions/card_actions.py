"""Asking for, confirming and blocking the card."""

import asyncio
import logging
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.card_service import (
    BlockRequest,
    CardNotFound,
    CardService,
    CardServiceError,
    card_service_from_env,
)
from actions.spoken import in_groups, last_four_digits, one_by_one

logger = logging.getLogger(__name__)

# A caller who could not be understood this many times in a row is handed to a person.
MAX_DIGIT_ATTEMPTS = 2


class ValidateCardForm(FormValidationAction):
    """Turns "1234", "1 2 3 4" or "uno dos tres cuatro" into "1234"; asks again once, then gives up."""

    def name(self) -> str:
        return "validate_card_form"

    def validate_card_last_four(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[str, Any]:
        digits = last_four_digits(str(value or ""))
        if digits:
            return {"card_last_four": digits, "card_digit_attempts": None}
        attempts = int(tracker.get_slot("card_digit_attempts") or 0) + 1
        if attempts >= MAX_DIGIT_ATTEMPTS:
            # Ending the form without digits: action_confirm_card hands the caller to a person.
            return {"card_last_four": None, "card_digit_attempts": None, "requested_slot": None}
        dispatcher.utter_message(response="utter_digits_not_understood")
        return {"card_last_four": None, "card_digit_attempts": float(attempts)}


class ActionConfirmCard(Action):
    def name(self) -> str:
        return "action_confirm_card"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        digits = tracker.get_slot("card_last_four")
        if digits:
            dispatcher.utter_message(response="utter_confirm_card", digits=one_by_one(digits))
        else:
            dispatcher.utter_message(response="utter_digits_handoff")
        return [SlotSet("card_digit_attempts", None)]


class ActionDiscardCard(Action):
    """The caller said the digits were not the right card: nothing is blocked."""

    def name(self) -> str:
        return "action_discard_card"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        dispatcher.utter_message(response="utter_card_not_blocked")
        dispatcher.utter_message(response="utter_anything_else")
        return [SlotSet("card_last_four", None)]


class ActionBlockCard(Action):
    def __init__(self, service: Optional[CardService] = None) -> None:
        self._service = service

    def name(self) -> str:
        return "action_block_card"

    @property
    def service(self) -> CardService:
        if self._service is None:
            self._service = card_service_from_env()
        return self._service

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        digits = tracker.get_slot("card_last_four")
        forget_card = [SlotSet("card_last_four", None)]
        if not digits:
            dispatcher.utter_message(response="utter_digits_handoff")
            return forget_card
        request = BlockRequest(
            last_four=digits,
            caller=tracker.get_slot("caller_number"),
            channel=tracker.get_slot("channel"),
            conversation_id=tracker.sender_id,
        )
        try:
            result = await asyncio.to_thread(self.service.block, request)
        except CardNotFound:
            dispatcher.utter_message(response="utter_card_not_found", digits=one_by_one(digits))
            return forget_card
        except CardServiceError as error:
            logger.warning("card_service.block.failed: %s (status %s)", error, error.status)
            dispatcher.utter_message(response="utter_card_service_down")
            return forget_card
        reference = in_groups(result.reference)
        if result.already_blocked:
            dispatcher.utter_message(response="utter_card_already_blocked", reference=reference)
        else:
            dispatcher.utter_message(
                response="utter_card_blocked", digits=one_by_one(digits), reference=reference
            )
        dispatcher.utter_message(response="utter_anything_else")
        return forget_card
