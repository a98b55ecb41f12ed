"""The per-app services every route needs, built once by the factory: settings, Rasa client, state store,
signature check, the waiter that holds slow turns, and in WhatsApp's REST mode the queue and its workers."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from flask import current_app

from . import metrics
from .config import Settings
from .delivery.queue import JobQueue
from .delivery.workers import LaneWorkers, waiting_for_rasa
from .rasa.client import Metadata, RasaClient, RasaError, Reply
from .state import StateStore
from .voice.holding import RasaWaiter
from .web.signature import SignatureCheck

EXTENSION = "twilio_bridge"


@dataclass
class Bridge:
    settings: Settings
    rasa: RasaClient
    store: StateStore
    signatures: SignatureCheck
    queue: JobQueue | None = None
    workers: LaneWorkers | None = None
    waiter: RasaWaiter = field(init=False)

    def __post_init__(self) -> None:
        self.waiter = RasaWaiter(self.post_to_rasa, self.read_reply, self.store, self.settings.rasa_max_in_flight)

    def ask_rasa(self, sender: str, message: str, metadata: Metadata, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send one message and read Rasa's answer; its latency goes on the log line and in the metrics. Raises RasaError.
        In a delivery thread, only the wait for the answer is done without a working slot (`waiting_for_rasa`)."""
        reply = self.post_to_rasa(sender, message, metadata, timeout)
        try:
            with waiting_for_rasa():
                reply.arrives()
        except BaseException:
            reply.abandon()
            raise
        return self.read_reply(reply)

    def post_to_rasa(self, sender: str, message: str, metadata: Metadata, timeout: float | None = None) -> Reply:
        """Send one message; `read_reply` reads the answer, in this thread or another. Raises RasaError (recorded
        as `read_reply` records one) when it could not be sent."""
        started = time.monotonic()
        try:
            return self.rasa.post(sender, message, metadata, timeout=timeout)
        except RasaError as exc:
            self._rasa_answered(exc.kind, time.monotonic() - started)
            raise

    def read_reply(self, reply: Reply, within: float | None = None) -> list[dict[str, Any]]:
        """Rasa's reply items, read within `within` seconds (and the request's timeout); Rasa's latency, from the
        message sent to its answer read, goes on the log line and in the metrics. Raises RasaError."""
        result = "error"
        try:
            items = reply.items(within)
            result = "ok" if items else "empty"
            return items
        except RasaError as exc:
            result = exc.kind
            raise
        finally:
            self._rasa_answered(result, reply.elapsed())

    @staticmethod
    def _rasa_answered(result: str, elapsed: float) -> None:
        metrics.rasa_answered(result, elapsed)
        structlog.contextvars.bind_contextvars(rasa_ms=round(elapsed * 1000))


def bridge() -> Bridge:
    return current_app.extensions[EXTENSION]
