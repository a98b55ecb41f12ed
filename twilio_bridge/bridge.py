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
from .delivery.workers import LaneWorkers
from .rasa.client import Metadata, RasaClient, RasaError
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
        self.waiter = RasaWaiter(self.ask_rasa, self.store, self.settings.rasa_max_in_flight)

    def ask_rasa(self, sender: str, message: str, metadata: Metadata, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send one message; record Rasa's latency on the log line and in the metrics. Raises RasaError."""
        started = time.monotonic()
        result = "error"
        try:
            items = self.rasa.send(sender, message, metadata, timeout=timeout)
            result = "ok" if items else "empty"
            return items
        except RasaError as exc:
            result = exc.kind
            raise
        finally:
            elapsed = time.monotonic() - started
            metrics.rasa_answered(result, elapsed)
            structlog.contextvars.bind_contextvars(rasa_ms=round(elapsed * 1000))


def bridge() -> Bridge:
    return current_app.extensions[EXTENSION]
