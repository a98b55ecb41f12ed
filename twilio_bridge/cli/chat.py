"""`python twilio_voice_server.py chat`: WhatsApp messages from the terminal, with Twilio's part played here.

Each line typed is one inbound message, posted to the WhatsApp webhook signed as Twilio signs it
(`WhatsAppUser`). In TwiML mode the `<Message>`s of the answer are printed; in REST mode (an empty
`<Response/>`) the replies are printed as they reach the fake Messages API (`--fake-api`). Answers
are checked the way Twilio takes them, and a `--script` stops at the first one Twilio would reject,
or at the first message without a reply in time.

A reply with buttons to tap (a quick reply or a list picker) shows them numbered `>1`, `>2`...;
typing `>1` taps the first, as WhatsApp would post it (ButtonPayload or ListId). `--voice-note FILE`
first sends FILE as a voice note, its media served by the fake API as Twilio serves media.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TextIO

import requests

from ..limits import WEBHOOK_TIMEOUT
from ..testing.fake_twilio_api import template_buttons, template_text
from ..testing.outbox import Outbox, OutboxError
from ..testing.phone import TwilioWouldFail
from ..testing.whatsapp_user import Posted, WhatsAppUser
from .call import FAILED, OK, Ask, unanswered

REPLY_WAIT_SECONDS = 15.0
TAP = re.compile(r"^>\s*(\d+)$")
AUDIO_TYPES = {".ogg": "audio/ogg", ".opus": "audio/ogg", ".oga": "audio/ogg", ".mp3": "audio/mpeg",
               ".m4a": "audio/mp4", ".aac": "audio/aac", ".amr": "audio/amr", ".wav": "audio/wav"}


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
        self.buttons: list[tuple[str, str, str]] = []  # the last reply's buttons: (kind, id, title)

    def run(self, voice_note: Path | None = None) -> int:
        """Send the voice note, then each line as a message until the input ends; OK, or FAILED with the reason."""
        try:
            if voice_note is not None and not self.send_voice_note(voice_note):
                return self.fail(self.no_reply())
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
        """Send one message (or tap a button: `>2`) and print its replies; False when a script should stop
        for want of one."""
        tap = TAP.match(body)
        if tap and self.buttons:
            number = int(tap.group(1))
            if not 1 <= number <= len(self.buttons):
                print(f"[no button {number}: tap >1 to >{len(self.buttons)}]", file=self.out)
                return True
            kind, button_id, title = self.buttons[number - 1]
            print(f"[tapped {title}]", file=self.out)
            if kind == "twilio/list-picker":
                return self.show_replies(self.user.send(title, list_id=button_id, button_text=title))
            return self.show_replies(self.user.send(title, button_payload=button_id, button_text=title))
        return self.show_replies(self.user.send(body))

    def send_voice_note(self, path: Path) -> bool:
        """Send the file as a voice note: its media is kept by the fake API, which the bridge fetches it from."""
        assert self.sent is not None
        content_type = AUDIO_TYPES.get(path.suffix.lower(), "audio/ogg")
        url = self.sent.add_media(path.read_bytes(), content_type)
        print(f"you> [voice note {path.name}]", file=self.out)
        return self.show_replies(self.user.send(media=((url, content_type),)))

    def show_replies(self, posted: Posted) -> bool:
        """Print the replies to one message; False when a script should stop for want of one."""
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
            if message.get("content"):
                self.show_buttons(message)
            else:
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

    def show_buttons(self, message: dict[str, Any]) -> None:
        """A quick reply's buttons on one line, a list picker's items one a line, each with what taps it."""
        kind, data = next(iter(message["content"].items()))
        self.show(template_text(message))
        self.buttons = [(kind, button_id, title) for button_id, title in template_buttons(message)]
        taps = [f">{number} [{title}]" for number, (_, _, title) in enumerate(self.buttons, 1)]
        if kind == "twilio/list-picker":
            print("\n".join([f"        [{data.get('button', '')}]", *(f"        {tap}" for tap in taps)]), file=self.out)
        else:
            print("        " + "  ".join(taps), file=self.out)

    def fail(self, message: str) -> int:
        self.out.flush()
        print(f"chat: {message}", file=self.err)
        return FAILED
