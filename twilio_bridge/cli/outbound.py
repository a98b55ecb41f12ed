"""`python twilio_voice_server.py notify | dial-out`: the outbound API from a terminal, as the operator's systems use it.

Both send one request with `Authorization: Bearer OUTBOUND_API_TOKEN` (from twilio.env), print the
bridge's answer, and with `--wait` follow `GET …/{id}` until the message or call has an outcome (exit 0
once delivered or read, or the call completed; 1 for a failure, an unanswered call, or still no outcome).
`chat` and `call` use the same client to play the customer's side (`chat --notification`, `call --outbound-context`).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import requests

from .. import routes
from .call import FAILED, OK

WAIT_POLL_SECONDS = 0.5
FINAL_MESSAGE = ("delivered", "read", "failed")
FINAL_CALL = ("completed", "busy", "no-answer", "failed", "canceled")


class OutboundError(Exception):
    """The outbound API refused the request or could not be reached; str() says why in one line."""


@dataclass
class OutboundClient:
    bridge_url: str
    token: str | None
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, path: str, payload: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        return self._json("POST", path, payload, headers, expect=202)

    def get(self, path: str) -> dict[str, Any]:
        return self._json("GET", path, None, {}, expect=200)

    def follow(self, status_url: str, final: tuple[str, ...], seconds: float, out: TextIO) -> dict[str, Any]:
        """GET the status until it is one of `final` (or time runs out), printing each new one."""
        deadline, shown = time.monotonic() + seconds, None
        while True:
            report = self.get(status_url)
            if report["status"] != shown:
                shown = report["status"]
                print(f"[{shown}{_details(report)}]", file=out)
            if shown in final or time.monotonic() >= deadline:
                return report
            time.sleep(WAIT_POLL_SECONDS)

    def _json(self, method: str, path: str, payload: Any, headers: dict[str, str], expect: int) -> dict[str, Any]:
        if not self.token:
            raise OutboundError("OUTBOUND_API_TOKEN is not set here: the outbound API needs it (and so does the bridge)")
        url = self.bridge_url.rstrip("/") + path
        try:
            answer = self.session.request(method, url, json=payload, timeout=15,
                                          headers={"Authorization": f"Bearer {self.token}", **headers})
        except requests.RequestException as exc:
            raise OutboundError(f"cannot reach the bridge at {self.bridge_url}: {type(exc).__name__}") from exc
        try:
            body: dict[str, Any] = answer.json()
        except ValueError:
            body = {}
        if answer.status_code == 404 and "error" not in body:
            raise OutboundError(f"{url} answered 404: the bridge's outbound API is off (set OUTBOUND_API_TOKEN there)")
        if answer.status_code != expect:
            raise OutboundError(f"the bridge answered HTTP {answer.status_code}: {body.get('error') or answer.text[:200]}")
        return body


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    notify = commands.add_parser("notify", help="send a WhatsApp template or an SMS through the outbound API",
                                 description="POST /api/outbound/messages: a template (--template HX… --var 1=…) "
                                             "or a free text (--body), with the context the assistant gets back "
                                             "with the customer's reply.")
    notify.add_argument("--to", required=True, metavar="ADDRESS", help="whatsapp:+E164, or +E164 for an SMS")
    notify.add_argument("--template", metavar="HX…", help="the Content API template's sid")
    notify.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a template variable")
    notify.add_argument("--body", help="a free text instead of a template (WhatsApp: within 24 h of the user's last)")
    _common(notify)

    dial = commands.add_parser("dial-out", help="start a call to a customer through the outbound API",
                               description="POST /api/outbound/calls: Twilio calls the customer; when they answer, "
                                           "the assistant starts with the context.")
    dial.add_argument("--to", required=True, metavar="+E164", help="the customer's number")
    dial.add_argument("--machine-detection", choices=("Enable", "DetectMessageEnd"),
                      help="Twilio's answering-machine detection")
    _common(dial)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", type=json_object, default={}, metavar="JSON",
                        help='what the assistant should know, e.g. \'{"card_last_four": "1234"}\'')
    parser.add_argument("--key", metavar="KEY", help="Idempotency-Key: a repeat with the same key does nothing")
    parser.add_argument("--bridge", metavar="URL", help="the bridge (default: http://127.0.0.1:$PORT)")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="follow the status this long, until it is final")


def json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, {…}")
    return parsed


def template_variables(pairs: list[str]) -> dict[str, str]:
    variables = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise OutboundError(f"--var {pair!r}: write it as NAME=VALUE, e.g. --var 1=1234")
        variables[name] = value
    return variables


def message_order(to: str, template: str | None, variables: dict[str, str], body: str | None,
                  context: dict[str, Any]) -> dict[str, Any]:
    order: dict[str, Any] = {"to": to, "context": context}
    if template:
        order.update(content_sid=template, variables=variables)
    if body is not None:
        order["body"] = body
    return order


def run_notify(args: argparse.Namespace, client: OutboundClient, out: TextIO, err: TextIO) -> int:
    try:
        order = message_order(args.to, args.template, template_variables(args.var), args.body, args.context)
        queued = client.post(routes.OUTBOUND_MESSAGES, order, args.key)
        print(f"queued {queued['id']} to {queued['to']} (status: {queued['status_url']})", file=out)
        if args.wait:
            report = client.follow(queued["status_url"], FINAL_MESSAGE, args.wait, out)
            return OK if report["status"] in ("delivered", "read") else _unfinished(report, args.wait, out)
    except OutboundError as exc:
        print(f"notify: {exc}", file=err)
        return FAILED
    return OK


def run_dial_out(args: argparse.Namespace, client: OutboundClient, out: TextIO, err: TextIO) -> int:
    order = {"to": args.to, "context": args.context}
    if args.machine_detection:
        order["machine_detection"] = args.machine_detection
    try:
        placed = client.post(routes.OUTBOUND_CALLS, order, args.key)
        print(f"calling {placed['to']}: {placed['id']}, Twilio call {placed['call_sid']} "
              f"(status: {placed['status_url']})", file=out)
        if args.wait:
            report = client.follow(placed["status_url"], FINAL_CALL, args.wait, out)
            return OK if report["status"] == "completed" else _unfinished(report, args.wait, out)
    except OutboundError as exc:
        print(f"dial-out: {exc}", file=err)
        return FAILED
    return OK


def _unfinished(report: dict[str, Any], waited: float, out: TextIO) -> int:
    """--wait ended without success: a failure was printed as it came; a status still moving is said so."""
    if report["status"] not in FINAL_MESSAGE + FINAL_CALL:
        print(f"[still {report['status']} after {waited:g} s]", file=out)
    return FAILED


def _details(report: dict[str, Any]) -> str:
    details = [f"{key} {report[key]}" for key in ("error_code", "answered_by", "sip_response_code") if report.get(key)]
    return f": {', '.join(details)}" if details else ""
