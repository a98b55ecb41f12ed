"""Logging: structlog, configured once before the app exists.

JSON lines when stderr is not a terminal, readable lines when it is. Request context
(call_sid, message_sid, turn...) is bound with contextvars and lands on every line.
Secrets are never logged; long digit strings (cards, phone numbers) are masked.
"""
from __future__ import annotations

import functools
import json as json_module
import logging
import os
import sys
import threading
from typing import Any, TextIO

import structlog
from gunicorn.glogging import Logger as GunicornLoggerBase

from .text import mask_digits

_SECRET_KEYS = ("token", "secret", "password", "authorization", "signature", "auth")
_NOT_PERSONAL = ("timestamp", "event", "route", "path")  # and identifiers ending in _sid


@functools.lru_cache(maxsize=1024)  # a line's keys come from a small set, asked about on every line
def _kind_of_key(key: str) -> str:
    """"secret" (never logged), "personal" (long digit strings masked) or "plain"."""
    if any(word in key.lower() for word in _SECRET_KEYS):
        return "secret"
    return "plain" if key in _NOT_PERSONAL or key.endswith("sid") else "personal"


def _mask(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():  # values replaced in place: the keys, and so the iteration, stay the same
        kind = _kind_of_key(key)
        if kind == "secret":
            event[key] = "[redacted]"
        elif kind == "personal":
            event[key] = _masked(value)
    return event


def _masked(value: Any) -> Any:
    """A personal value with its long digit strings masked, in a list or a mapping too; anything else JSON cannot
    hold is written as its repr(), which is masked before it is (an exception's message may hold a card number)."""
    if isinstance(value, str):
        return mask_digits(value)
    if isinstance(value, (int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_masked(item) for item in value]
    if isinstance(value, dict):
        return {name: _masked(item) for name, item in value.items()}
    return mask_digits(repr(value))


_PROCESS_ID = os.getpid()  # kept, not asked for on every line (a system call); a forked worker keeps its own


def _forked() -> None:
    global _PROCESS_ID
    _PROCESS_ID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _pid(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Which gunicorn worker wrote the line: a held call's turns may be served by several."""
    event.setdefault("pid", _PROCESS_ID)
    return event


_JSON = json_module.JSONEncoder(default=repr)  # one encoder for every line, where json.dumps(default=…) makes one each


def _json_line(_: Any, __: str, event: dict[str, Any]) -> str:
    """The line as JSON; a value JSON cannot hold as its repr()."""
    return _JSON.encode(event)


_WRITE_LOCK = threading.Lock()


def write_line(stream: TextIO, line: str) -> None:
    """One whole line per write, under the one lock every log writer in the process shares:
    the app's lines and gunicorn's never interleave, and each reaches the file in one write.
    A line that cannot be written (a full disk, a log pipe gone) is lost, never the request that wrote it."""
    with _WRITE_LOCK:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # ValueError: the stream is closed
            pass


class LineLogger:
    """structlog's logger: hands each rendered line to write_line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def msg(self, message: str) -> None:
        write_line(self.stream, message)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """gunicorn's (standard logging) lines, through the same writer as the app's."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.stream, self.format(record))
        except Exception:
            self.handleError(record)


def _renderer(json: bool | None, stream: TextIO) -> Any:
    use_json = not stream.isatty() if json is None else json
    return _json_line if use_json else structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(level: str = "INFO", json: bool | None = None, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _pid,
            structlog.processors.format_exc_info,
            _mask,
            _renderer(json, stream),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=lambda *_: LineLogger(stream),
        cache_logger_on_first_use=False,  # so a reconfiguration (tests, gunicorn hooks) reaches every module
    )


log = structlog.get_logger("twilio_bridge")


class GunicornLogger(GunicornLoggerBase):
    """gunicorn's logger (`logger_class`), minus the access line nobody reads: with `logconfig_dict` set,
    gunicorn builds every request's access-log atoms (its headers and environ, copied into a dict) and
    hands them to a logger that drops them; about a twentieth of a worker's CPU per voice turn."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


def gunicorn_logconfig(level: str = "INFO", json: bool | None = None) -> dict[str, Any]:
    """gunicorn's own lines (boot, worker exits, timeouts) in the app's format: `logconfig_dict`."""
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "processor": _renderer(json, sys.stderr),
        "foreign_pre_chain": [
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _pid,
            structlog.processors.format_exc_info,  # the traceback as text, where a renderer shows an object's repr
            _mask,
        ],
    }
    handler = {"class": "twilio_bridge.logs.LineHandler", "formatter": "structlog", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": formatter},
        "handlers": {"stderr": handler},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            # the app writes one structured line per webhook; an access line would repeat it
            "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
