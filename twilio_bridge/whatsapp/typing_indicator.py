"""WhatsApp's "typing…" for a message a worker has taken, which also marks that message read.

Posted on a thread of its own (Twilio's /v2/Indicators/Typing.json), so a slow or failing Twilio
never delays the reply; a failure is logged and counted, nothing more. A post costs about as much CPU
as a webhook (twilio's client, requests): it waits for the webhooks in hand first, as a delivery does
(`delivery.workers.WebhooksFirst`), 50 ms at most.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import requests
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from .. import metrics
from ..logs import log
from ..twilio_rest import twilio_failure


class TypingIndicator:
    def __init__(self, client: Client, threads: int = 2, webhooks_first: Callable[[], None] = lambda: None):
        self.client = client
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="whatsapp-typing")
        self.webhooks_first = webhooks_first

    def show(self, message_sid: str) -> Future[bool]:
        """Start showing "typing…" to the user who sent `message_sid`; the future says whether Twilio took it.
        Cancel it once the reply is ready: a post still waiting for a thread would show "typing…" after the reply."""
        return self.pool.submit(self._post, message_sid)

    def _post(self, message_sid: str) -> bool:
        self.webhooks_first()
        try:
            self.client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=message_sid)
        except (TwilioException, requests.RequestException) as exc:
            failure = twilio_failure(exc)
            metrics.whatsapp_typing("failed")
            log.warning("whatsapp.typing.failed", message_sid=message_sid, status=failure.status, code=failure.code,
                        detail=failure.detail)
            return False
        metrics.whatsapp_typing("shown")
        return True
