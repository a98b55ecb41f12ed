"""A stand-in for Rasa's REST channel, served over real HTTP for tests, benchmarks and trying the bridge.

It answers as rasa-pro 3.21 does (see docs/architecture.md, "Rasa's REST channel, as it really behaves") with a small
scripted Spanish card-blocking dialogue, and can be switched into the failure modes the bridge must survive.
It also answers an outbound card alert: a call whose `/session_start` metadata has an `outbound_context`, or a chat
message whose metadata has a `last_notification`, with `card_last_four` in its context ("was it you?": sí unblocks,
no keeps the card blocked and offers a new one).

Served on one event loop (event_loop_server), as Rasa is: connections kept alive, a slow answer an
asyncio wait that costs no thread, one sender's messages answered one at a time, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import threading
import time
import unicodedata
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .event_loop_server import EventLoopServer

MODES = ("ok", "echo", "hang", "error500", "html", "invalid_json", "empty", "huge", "nasty", "drop")
ECHO = "Recibido: "  # echo mode answers every text with this and the text: a reply names its message
NASTY_TEXT = 'Hola <b>cliente</b> & "amigo" \x00\x07 ✅🚀 **importante** _nota_ [enlace](https://x.y) # Título'
HUGE_SENTENCES = (
    "Su tarjeta de crédito queda protegida mientras revisamos los últimos movimientos de la cuenta. "
    "Le recordamos que nunca le pediremos su número secreto por teléfono ni por mensaje. "
)
HUGE_TEXT = (HUGE_SENTENCES * (100_000 // len(HUGE_SENTENCES) + 1))[:99_999].rstrip() + "."

GREETING = "Hola, soy el asistente de tarjetas. ¿En qué le puedo ayudar?"
ASK_DIGITS = "Entiendo. Para bloquear su tarjeta, marque o diga los últimos cuatro dígitos."
BLOCKED = "Listo. Su tarjeta está bloqueada. Su número de referencia es 4 8 2 1.\n\n¿Algo más?"
NOT_BLOCKED = "De acuerdo, no la bloqueo. ¿Algo más?"
GOODBYE = "Gracias por llamar. Hasta luego."
HANDOFF = "Le comunico con un asesor."
FALLBACK = "Perdone, no le entendí. Puedo bloquear una tarjeta perdida o robada."
CARD_ALERT = "Le llamamos del banco. Bloqueamos su tarjeta que termina en {digits} por un cargo sospechoso. ¿Fue usted?"
UNBLOCKED = "Gracias. Desbloqueé su tarjeta que termina en {digits}. ¿Algo más?"
KEPT_BLOCKED = "Su tarjeta que termina en {digits} sigue bloqueada. Le enviaremos una tarjeta nueva. ¿Algo más?"
CONFIRM_BUTTONS = [{"title": "Sí", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]
DIGIT_GATHER = {"gather": {"input": "dtmf speech", "num_digits": 4, "timeout": 6}}
SPOKEN_DIGITS = {w: str(i) for i, w in enumerate("cero uno dos tres cuatro cinco seis siete ocho nueve".split())}
PAYLOADS = ("/session_start", "/session_end", "/affirm", "/deny")


def _normalise(text: str) -> str:
    """Lower case, accents and punctuation removed: what the scripted dialogue matches against."""
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^\w/]+", " ", plain).split())


def _mentions(text: str, stems: str) -> bool:
    return re.search(rf"\b({stems})", text) is not None


def _four_digits(text: str) -> str | None:
    digits = "".join(SPOKEN_DIGITS.get(word, word) for word in text.split())
    return digits if re.fullmatch(r"\d{4}", digits) else None


class RasaStandIn(EventLoopServer):
    """Rasa's REST channel on 127.0.0.1: `.start()`, point the bridge at `.webhook_url`, assert on `.received`."""

    def __init__(self, delay: float = 0.0, mode: str = "ok", record: bool = True) -> None:
        self.delay = delay
        self.mode = mode  # validated by the property below
        self.hang_seconds = 60.0
        self.record = record  # off on the command line, where nobody reads `received` and benchmarks send millions
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # what tests read and script from their own threads; held for no wait
        self._sender_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # a sender's lock, and how many hold or want it
        self._states: dict[str, dict[str, str]] = {}
        self._canned: deque[list[dict[str, Any]]] = deque()
        self._canned_for: defaultdict[str, deque[list[dict[str, Any]]]] = defaultdict(deque)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._mode = mode

    @property
    def origin(self) -> str:
        return self.base_url

    @property
    def webhook_url(self) -> str:
        return self.origin + "/webhooks/rest/webhook"

    def reply_with(self, items: list[dict[str, Any]], sender: str | None = None) -> None:
        """Make the next webhook answer exactly `items` (once): the next for `sender`, or for any sender.
        Naming the sender keeps a request left over from an earlier test from taking the answer."""
        with self._lock:
            if sender is None:
                self._canned.append(items)
            else:
                self._canned_for[sender].append(items)

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self._states.clear()
            self._canned.clear()
            self._canned_for.clear()

    def _on_loop(self) -> None:
        self._sender_locks.clear()  # an asyncio lock belongs to the loop it first waited on

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = (request.method, request.path)
        if route == ("GET", "/"):
            return web.Response(text="Hello from Rasa: 3.21.0")
        if route == ("POST", "/webhooks/rest/webhook"):
            return await self._webhook(request)
        if route == ("POST", "/_standin/control"):
            return self._control(await _json_body(request))
        return web.Response(text="Not found", status=404)

    def _control(self, body: Any) -> web.Response:
        try:
            if not isinstance(body, dict):
                raise TypeError("the body must be a JSON object")
            delay = float(body.get("delay", self.delay))
            self.mode = body.get("mode", self.mode)
        except (TypeError, ValueError):
            return _json({"error": 'expected {"mode": ..., "delay": seconds}', "modes": list(MODES)}, status=400)
        self.delay = delay
        return _json({"mode": self.mode, "delay": self.delay})

    async def _webhook(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _json({"error": "Failed when parsing body as json"}, status=400)
        sender = str(body.get("sender") or "default")
        message = body.get("message")
        if self.record:
            with self._lock:
                record = {"sender": sender, "message": message, "metadata": body.get("metadata"), "at": time.time(),
                          "peer": request.remote}  # which bridge host asked, when there are several
                self.received.append(record)
        async with self._in_order(sender):
            await self._pause(self.delay)
            mode = self.mode
            if mode == "hang":
                await self._pause(self.hang_seconds)
            return self._answer(mode, sender, message, request, body.get("metadata"))

    @contextlib.asynccontextmanager
    async def _in_order(self, sender: str) -> AsyncIterator[None]:
        """One message of a sender at a time, as Rasa handles them; the lock goes when nobody holds or wants it
        (a benchmark's hundred thousand senders would otherwise keep one each, and slow every collection)."""
        lock, users = self._sender_locks.get(sender) or (asyncio.Lock(), 0)
        self._sender_locks[sender] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._sender_locks[sender]
            if users == 1:
                del self._sender_locks[sender]
            else:
                self._sender_locks[sender] = (lock, users - 1)

    def _answer(self, mode: str, sender: str, message: Any, request: web.BaseRequest,
                metadata: Any = None) -> web.StreamResponse:
        with self._lock:
            own = self._canned_for.get(sender)
            canned = own.popleft() if own else self._canned.popleft() if self._canned else None
        if canned is not None:
            return _json(canned)
        if mode == "drop":
            assert request.transport is not None
            request.transport.close()  # no answer: aiohttp finds the connection closed and writes nothing
            return web.Response()
        if mode == "error500":
            return web.Response(text="<html><body><h1>Internal Server Error</h1></body></html>", status=500,
                                content_type="text/html")
        if mode == "html":
            return web.Response(text="<html><body>Rasa is starting</body></html>", content_type="text/html")
        if mode == "invalid_json":
            return web.Response(text='[{"text": "unterminated', content_type="application/json")
        texts = {"huge": [HUGE_TEXT], "nasty": [NASTY_TEXT], "empty": []}.get(mode)
        if mode == "echo" and isinstance(message, str) and not message.startswith("/"):
            texts = [ECHO + message]  # no dialogue state: asking twice gets the same answer
        items = [{"text": t} for t in texts] if texts is not None else self._converse(sender, message, metadata)
        return _json([{"recipient_id": sender, **item} for item in _split_blank_lines(items)])

    def _converse(self, sender: str, message: Any, metadata: Any = None) -> list[dict[str, Any]]:
        """One turn of the scripted dialogue; `[]` once the conversation has ended, as Rasa answers."""
        state = self._states.setdefault(sender, {"step": "idle"})
        if state["step"] == "ended" or not isinstance(message, str):
            return []
        raw, text = message.strip(), _normalise(message)
        step, state["step"] = state["step"], "idle"  # a turn settles what was pending unless it asks again
        alerted = _alerted_card(metadata)
        if raw == "/session_end":
            state["step"] = "ended"
            return []
        if raw == "/session_start" and alerted:
            state.update(step="alert", card=alerted)
            return [{"text": CARD_ALERT.format(digits=" ".join(alerted)), "buttons": CONFIRM_BUTTONS}]
        if raw == "/session_start":
            return [{"text": GREETING}]
        if alerted:  # a chat message answering the notification it carries
            step, state["card"] = "alert", alerted
        if step == "alert" and (raw == "/affirm" or text.split()[:1] == ["si"]):
            return [{"text": UNBLOCKED.format(digits=" ".join(state["card"]))}]
        if step == "alert" and (raw == "/deny" or text.split()[:1] == ["no"]):
            return [{"text": KEPT_BLOCKED.format(digits=" ".join(state["card"]))}]
        if raw.startswith("/") and raw not in PAYLOADS:
            return [{"text": "COMMAND EXECUTED"}]
        if step == "confirm" and (raw == "/affirm" or text.split()[:1] == ["si"]):
            return [{"text": BLOCKED}]
        if step == "confirm" and (raw == "/deny" or text.split()[:1] == ["no"]):
            return [{"text": NOT_BLOCKED}]
        digits = _four_digits(text) if step == "digits" else None
        if digits:
            state["step"] = "confirm"
            question = f"La tarjeta que termina en {' '.join(digits)}. ¿La bloqueo?"
            return [{"text": question, "buttons": CONFIRM_BUTTONS}]
        if _mentions(text, "agente|persona|humano|asesor"):
            return [{"text": HANDOFF}, {"custom": {"handoff": True}}]
        if _mentions(text, "perd|rob|extravi|bloque"):
            state["step"] = "digits"
            return [{"text": ASK_DIGITS}, {"custom": DIGIT_GATHER}]
        if _mentions(text, "imagen"):
            return [{"text": "Así se ve su tarjeta."}, {"image": "https://example.com/card.png"}]
        if raw == "/deny" or re.fullmatch(r"no( gracias)?", text) or _mentions(text, "adios"):
            return [{"text": GOODBYE}, {"custom": {"hangup": True}}]
        return [{"text": FALLBACK}]


def _alerted_card(metadata: Any) -> str | None:
    """The card of an outbound alert this message answers: the call's context, or the notification's."""
    if not isinstance(metadata, dict):
        return None
    notification = metadata.get("last_notification")
    context = metadata.get("outbound_context") or (notification.get("context") if isinstance(notification, dict) else None)
    digits = str(context.get("card_last_four", "")) if isinstance(context, dict) else ""
    return digits if re.fullmatch(r"\d{4}", digits) else None


def _split_blank_lines(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rasa's collecting channel sends a plain text as one message per blank-line-separated part."""
    out: list[dict[str, Any]] = []
    for item in items:
        if "text" in item and "buttons" not in item:
            out.extend({**item, "text": part} for part in item["text"].strip().split("\n\n"))
        else:
            out.append(item)
    return out


async def _json_body(request: web.BaseRequest) -> Any:
    """The body as JSON whatever its Content-Type, as Rasa reads it; None if it is not JSON."""
    try:
        return json.loads(await request.read())
    except ValueError:  # not UTF-8, or not JSON
        return None


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload, ensure_ascii=False), status=status, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Rasa REST stand-in in the foreground.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5005,
                        help="port to listen on, 0 for a free one (default: %(default)s); the bridge's "
                             "RASA_WEBHOOK_URL is http://127.0.0.1:PORT/webhooks/rest/webhook")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long before each answer, to play a slow assistant (default: %(default)g)")
    parser.add_argument("--mode", choices=MODES, default="ok",
                        help="how to answer: ok (the scripted dialogue) or a failure the bridge must survive: "
                             "hang, error500, html, invalid_json, empty ([]), huge, nasty (markup, emoji, "
                             "control characters), drop (close the connection) (default: %(default)s)")
    args = parser.parse_args()

    def announce(standin: RasaStandIn) -> None:
        print(f"Rasa stand-in listening: RASA_WEBHOOK_URL={standin.webhook_url}", flush=True)

    RasaStandIn(delay=args.delay, mode=args.mode, record=False).run(args.host, args.port, announce)


if __name__ == "__main__":
    main()
