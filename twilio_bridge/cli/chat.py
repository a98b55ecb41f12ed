"""`python twilio_voice_server.py chat`: WhatsApp messages from the terminal, with Twilio's part played here.

Each line typed is one inbound message, posted to the WhatsApp webhook signed as Twilio signs it
(`WhatsAppUser`). In TwiML mode the `<Message>`s of the answer are printed; in REST mode (an empty
`<Response/>`) the replies are printed as they reach the fake Messages API (`--fake-api`). Answers
are checked the way Twilio takes them, and a `--script` stops at the first one Twilio would reject,
or at the first message without a reply in time.
"""
from __future__ import annotations

import json
from typing import Any, TextIO

import requests

from ..limits import WEBHOOK_TIMEOUT
from ..testing.outbox import Outbox, OutboxError
from ..testing.phone import TwilioWouldFail
from ..testing.whatsapp_user import WhatsAppUser
from .call import FAILED, OK, Ask, unanswered

REPLY_WAIT_SECONDS = 15.0


class ChatSimulator:
    def __init__(self, user: WhatsAppUser, ask: Ask, out: TextIO, err: TextIO, sent: Outbox | None = None,
                 reply_wait: float = REPLY_WAIT_SECONDS, scripted: bool = False):
        self.user = user
        self.ask = ask
        self.out = out
        self.err = err
        self.sent = sent  # REST mode's replies, when a fake Messages API is watched
        self.reply_wait = reply_wait
        self.scripted = scripted  # a script stops when a message gets no reply

    def run(self) -> int:
        """Send each line as a message until the input ends; OK, or FAILED with the reason printed."""
        try:
            while (line := self.ask("you> ")) is not None:
                if line.strip() and not self.exchange(line.strip()):
                    return self.fail(self.no_reply())
        except TwilioWouldFail as exc:
            hint = " (this bridge has no WhatsApp webhook)" if str(exc).endswith("HTTP 404") else ""
            return self.fail(f"Twilio would fail this message: {exc}{hint}")
        except OutboxError as exc:
            return self.fail(str(exc))
        except (requests.RequestException, KeyboardInterrupt) as exc:
            return self.fail(unanswered(exc, self.user.twilio.base_url, WEBHOOK_TIMEOUT))
        finally:
            if self.sent is not None:
                self.sent.close()
        return OK

    def exchange(self, body: str) -> bool:
        """Send one message and print its replies; False when a script should stop for want of one."""
        posted = self.user.send(body)
        for reply in posted.replies:
            self.show(reply.body, reply.media)
        if posted.replies:
            return True
        if self.sent is None:
            print("[no reply in the answer; in REST mode replies go out through Twilio's Messages API: "
                  "watch a fake one with --fake-api]", file=self.out)
            return True
        arrived = 0
        for message in self.sent.arrivals(self.reply_wait):
            self.show_sent(message)
            arrived += 1
        if arrived:
            return True
        if self.scripted:
            return False
        print(f"[{self.no_reply()}]", file=self.out)
        return True

    def no_reply(self) -> str:
        assert self.sent is not None
        return (f"no reply reached the fake Messages API at {self.sent.base_url} within {self.reply_wait:g} s "
                f"(the bridge's TWILIO_API_BASE_URL must be {self.sent.base_url}, its account SID and token the "
                "fake's; the bridge's log says more)")

    def notified(self, queued: dict[str, Any]) -> None:
        """The business wrote first (the outbound API): what reached the user, before they answer."""
        print(f"[the business sent {queued['id']} through the outbound API]", file=self.out)
        if self.sent is not None:
            for message in self.sent.arrivals(self.reply_wait):
                self.show_sent(message)

    def show_sent(self, message: dict[str, Any]) -> None:
        """One message as the fake Messages API recorded it: a body and media, or a template and its variables."""
        template = f"[template {message['content_sid']} {json.dumps(message.get('content_variables') or {})}]"
        body = message["body"] or (template if message.get("content_sid") else "")
        self.show(body, tuple(message["media_urls"]))

    def show(self, body: str, media: tuple[str, ...] = ()) -> None:
        if body:
            first, *rest = body.split("\n")
            print("\n".join(["bridge: " + first, *(f"        {line}" if line else "" for line in rest)]), file=self.out)
        for url in media:
            print(f"bridge: [media {url}]", file=self.out)

    def fail(self, message: str) -> int:
        self.out.flush()
        print(f"chat: {message}", file=self.err)
        return FAILED
