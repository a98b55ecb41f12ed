"""Plays Twilio's part in a relay-mode call (ConversationRelay): the call webhook, the WebSocket, the action URL.

It posts the call webhook signed, reads `<Connect><ConversationRelay>`, opens the WebSocket with the upgrade
signed for the public wss:// URL, sends `setup`, then whatever the caller does (`prompt`, `dtmf`,
`interrupt`), and collects the bridge's text tokens and `end`. When the session ends it posts the
`<Connect action>` as Twilio does (with `HandoffData` when the bridge sent one) and follows the TwiML.
Used by the tests, by `python twilio_voice_server.py call --relay` and by `check`.
"""
from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from .. import routes
from ..web.signature import sign
from .phone import PhoneCall, TwilioPhone, TwilioWouldFail, check_voice_answer, sid

REPLY_SECONDS = 15.0


class RelayRefused(AssertionError):
    """The bridge refused the WebSocket upgrade: `status` is its HTTP answer."""

    def __init__(self, status: int):
        super().__init__(f"the WebSocket upgrade was refused with HTTP {status}")
        self.status = status


@dataclass
class Reply:
    """One reply from the bridge: its tokens as sent, and `handoff` when the session ended with it."""

    tokens: list[str] = field(default_factory=list)
    handoff: dict[str, Any] | None = None
    closed: bool = False  # the socket closed (with or without an end message)

    @property
    def text(self) -> str:
        return "".join(self.tokens).strip()


def open_relay_socket(phone: TwilioPhone, public_url: str, timeout: float = 10.0,
                      sock: socket.socket | None = None) -> ClientConnection:
    """Open the WebSocket at `public_url` as Twilio does: to the bridge (phone.base_url), signed for the public
    URL. `sock`: an open connection to use (a test that resolves a public name to 127.0.0.1 makes its own)."""
    parts = urlsplit(public_url)
    target = routes.websocket_url(phone.base_url) + parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"X-Twilio-Signature": sign(phone.auth_token, public_url, {})} if phone.auth_token else {}
    context = None
    if target.startswith("wss://"):
        context = ssl.create_default_context(cafile=phone.verify if isinstance(phone.verify, str) else None)
    try:
        return connect(target, additional_headers=headers, open_timeout=timeout, max_size=2 ** 20, sock=sock,
                       ssl=context)
    except InvalidStatus as exc:
        raise RelayRefused(exc.response.status_code) from None


class RelayCall:
    """One relay-mode call. `on_token(token, last)` sees every token as it arrives (the simulator prints them)."""

    def __init__(self, phone: TwilioPhone, from_: str = "+525512345678", to: str = "+525500000000",
                 call_sid: str | None = None, on_token: Callable[[str, bool], None] | None = None,
                 direction: str = "inbound", status_callback: str | None = None):
        self.phone = phone
        self.sid = call_sid or sid("CA")
        # Twilio's webhooks for this call, and the TwiML once the session is over (a call the bridge placed
        # is outbound-api, its status going to the StatusCallback the Calls API was given)
        self.after = PhoneCall(phone, self.sid, from_, to, direction=direction, status_callback=status_callback)
        self.session_id = sid("VX")
        self.relay: dict[str, str] = {}  # the <ConversationRelay> attributes
        self.action_url = ""
        self.on_token = on_token
        self.socket: ClientConnection | None = None
        self.handoff: dict[str, Any] | None = None
        self.session_over = threading.Event()
        self._frames: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self.hung_up = False
        self.failure: TwilioWouldFail | None = None  # what the reader found wrong, raised to the test

    # the call --------------------------------------------------------------------------------

    def start(self) -> Reply:
        """The call webhook, then the WebSocket and `setup`; returns the greeting."""
        status = "ringing" if self.after.direction == "inbound" else "in-progress"
        answer = self.phone.fetch(self.phone.public(routes.VOICE), self.after.params(CallStatus=status))
        root = check_voice_answer(answer, answer.content_type)
        relay = root.find("Connect/ConversationRelay")
        connect_verb = root.find("Connect")
        if relay is None or connect_verb is None:
            raise TwilioWouldFail(f"the call webhook answered no <Connect><ConversationRelay>: {answer.body[:300]}")
        self.relay = dict(relay.attrib)
        if not self.relay.get("url", "").startswith(("ws://", "wss://")):
            raise TwilioWouldFail(f"ConversationRelay url={self.relay.get('url')!r} is not a WebSocket URL")
        return self.connect(self.relay["url"], self.phone.public(connect_verb.get("action") or "", answer.url))

    def connect(self, socket_url: str, action_url: str = "", sock: socket.socket | None = None) -> Reply:
        """Open the WebSocket at its public URL and send `setup`; returns the greeting. `start()` calls it with
        what the call webhook answered; alone, it skips the webhook (`check`, a test through a proxy)."""
        self.action_url = action_url
        self.socket = open_relay_socket(self.phone, socket_url, sock=sock)
        self._reader = threading.Thread(target=self._read, name=f"relay-{self.sid[-6:]}", daemon=True)
        self._reader.start()
        self.send({"type": "setup", "sessionId": self.session_id, "accountSid": self.phone.account_sid,
                   "callSid": self.sid, "from": self.after.from_, "to": self.after.to, "direction": self.after.direction,
                   "callStatus": "RINGING", "customParameters": {}})
        return self.reply()

    def say(self, text: str) -> Reply:
        self.send({"type": "prompt", "voicePrompt": text, "lang": self.relay.get("language", ""), "last": True})
        return self.reply()

    def press(self, digits: str) -> Reply:
        """Keypad digits, one `dtmf` message each; the reply to the last of them."""
        for digit in digits:
            self.send({"type": "dtmf", "digit": digit})
        return self.reply()

    def interrupt(self, heard: str, ms: int = 1200) -> None:
        """The caller talked over the bridge after hearing `heard`."""
        self.send({"type": "interrupt", "utteranceUntilInterrupt": heard, "durationUntilInterruptMs": ms})

    def send(self, message: dict[str, Any]) -> None:
        assert self.socket is not None, "start() the call first"
        self.socket.send(json.dumps(message))

    def reply(self, timeout: float = REPLY_SECONDS) -> Reply:
        """Tokens until one says `last`, or the session ends (then the action URL has been followed)."""
        reply = Reply()
        while True:
            try:
                frame = self._frames.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no complete reply within {timeout:g} s; got {reply.tokens}") from None
            if self.failure is not None:
                raise self.failure
            if frame is None:
                reply.closed, reply.handoff = True, self.handoff
                self._frames.put(None)  # the session stays over for later readers
                return reply
            if frame.get("type") == "text":
                reply.tokens.append(frame["token"])
                if frame.get("last"):
                    return reply

    def ended(self, timeout: float = REPLY_SECONDS) -> dict[str, Any] | None:
        """Wait for the session to end (and the action URL to be followed); the handoffData it ended with."""
        if not self.session_over.wait(timeout):
            raise TimeoutError(f"the relay session did not end within {timeout:g} s")
        if self.failure is not None:
            raise self.failure
        return self.handoff

    def hangup(self, status: str = "completed") -> int:
        """The caller hangs up: Twilio closes the WebSocket and posts the status callback."""
        self.hung_up = True
        self.close_socket()
        return self.after.hangup(status)

    def close_socket(self) -> None:
        if self.socket is not None:
            self.socket.close()
        if self._reader is not None:
            self._reader.join(10)

    @property
    def heard(self) -> list[str]:
        """What the caller heard from the TwiML after the session (the apology, the transfer)."""
        return self.after.heard

    @property
    def dialed(self) -> str | None:
        return self.after.dialed

    @property
    def state(self) -> str:
        return self.after.state

    # Twilio's side of the socket -----------------------------------------------------------------

    def _read(self) -> None:
        assert self.socket is not None
        try:
            for raw in self.socket:
                frame = json.loads(raw)
                self._check(frame)
                if frame["type"] == "text" and self.on_token is not None:
                    self.on_token(frame["token"], bool(frame.get("last")))
                if frame["type"] == "end":
                    self.handoff = json.loads(frame["handoffData"]) if frame.get("handoffData") else None
                    break
                self._frames.put(frame)
        except ConnectionClosed:
            pass
        except TwilioWouldFail as exc:
            self.failure = exc
        finally:
            self.socket.close()
            self._session_ended()
            self._frames.put(None)

    def _session_ended(self) -> None:
        """Twilio posts the <Connect action> when the session is over, with the end message's handoffData."""
        params = {"SessionId": self.session_id, "SessionStatus": "ended" if self.handoff else "failed"}
        if self.handoff is not None:
            params["HandoffData"] = json.dumps(self.handoff)
        try:
            if self.action_url and not self.hung_up:
                self.after.follow(self.action_url, self.after.params(**params))
        except (OSError, AssertionError) as exc:  # requests' errors are OSErrors; TwilioWouldFail an AssertionError
            self.failure = exc if isinstance(exc, TwilioWouldFail) else TwilioWouldFail(f"the action URL failed: {exc}")
        finally:
            self.session_over.set()

    @staticmethod
    def _check(frame: Any) -> None:
        """Twilio's rules for what the bridge sends; a breach is what a real caller would hear go wrong."""
        if not isinstance(frame, dict) or frame.get("type") not in ("text", "end", "play", "sendDigits", "language"):
            raise TwilioWouldFail(f"ConversationRelay got an unknown message: {str(frame)[:200]}")
        if frame["type"] == "text" and (not isinstance(frame.get("token"), str) or not isinstance(frame.get("last"), bool)):
            raise TwilioWouldFail(f"a text message needs a string token and a boolean last: {frame}")
        if frame["type"] == "end" and "handoffData" in frame and not isinstance(frame["handoffData"], str):
            raise TwilioWouldFail(f"handoffData must be a JSON string, not {type(frame['handoffData']).__name__}")
