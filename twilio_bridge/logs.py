"""Logging: structlog, configured once before the app exists.

JSON lines when stderr is not a terminal, readable lines when it is. Request context
(call_sid, message_sid, turn...) is bound with contextvars and lands on every line.
Secrets are never logged; long digit strings (cards, phone numbers) are masked.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from .text import mask_digits

_SECRET_KEYS = ("token", "secret", "password", "authorization", "signature", "auth")
_NOT_PERSONAL = ("timestamp", "event", "route", "path")  # and identifiers ending in _sid


def _personal(key: str) -> bool:
    return key not in _NOT_PERSONAL and not key.endswith("sid")


def _mask(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "[redacted]"
        elif isinstance(value, str) and _personal(key):
            event[key] = mask_digits(value)
    return event


def configure_logging(level: str = "INFO", json: bool | None = None, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    use_json = not stream.isatty() if json is None else json
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,  # so a reconfiguration (tests, gunicorn hooks) reaches every module
    )


log = structlog.get_logger("twilio_bridge")
