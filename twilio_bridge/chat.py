"""`python twilio_voice_server.py chat`: WhatsApp messages from the terminal, with Twilio's part played here.

Each line typed is one inbound message, posted to the WhatsApp webhook signed as Twilio signs it;
the `<Message>`s in the answer are printed. Answers are checked the way Twilio takes them, and a
`--script` stops at the first one Twilio would reject.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import TextIO

import requests

from .phone import Answer, TwilioPhone, TwilioWouldFail, sid
from .simulator import FAILED, OK, Ask

WEBHOOK = "/webhook/twilio/whatsapp"
MESSAGING_WEBHOOK_TIMEOUT = 15.0
BODY_LIMIT = 1600


class ChatSimulator:
    def __init__(self, phone: TwilioPhone, ask: Ask, out: TextIO, err: TextIO,
                 number: str = "+5215512345678", bridge_number: str = "+14155238886", profile_name: str = "Ana"):
        self.phone = phone
        self.ask = ask
        self.out = out
        self.err = err
        self.number = number
        self.bridge_number = bridge_number
        self.profile_name = profile_name

    def run(self) -> int:
        """Send each line as a message until the input ends; OK, or FAILED with the reason printed."""
        try:
            while (line := self.ask("you> ")) is not None:
                if line.strip():
                    self.show(self.send(line.strip()))
        except TwilioWouldFail as exc:
            hint = " (this bridge has no WhatsApp webhook)" if str(exc).endswith("HTTP 404") else ""
            return self.fail(f"Twilio would fail this message: {exc}{hint}")
        except requests.Timeout:
            return self.fail(f"the bridge at {self.phone.base_url} did not answer; Twilio waits "
                             f"{MESSAGING_WEBHOOK_TIMEOUT:g} s")
        except requests.ConnectionError as exc:
            return self.fail(f"cannot reach the bridge at {self.phone.base_url}: {type(exc).__name__}")
        except KeyboardInterrupt:
            return self.fail("interrupted while waiting for the bridge")
        return OK

    def send(self, body: str) -> list[str]:
        """Post one inbound WhatsApp message; the bodies of the <Message>s in the answer."""
        message_sid = sid("SM")
        params = {"MessageSid": message_sid, "SmsMessageSid": message_sid, "SmsSid": message_sid,
                  "AccountSid": self.phone.account_sid, "From": f"whatsapp:{self.number}",
                  "To": f"whatsapp:{self.bridge_number}", "Body": body, "NumMedia": "0", "NumSegments": "1",
                  "SmsStatus": "received", "MessageType": "text", "ProfileName": self.profile_name,
                  "WaId": self.number.lstrip("+"), "ApiVersion": "2010-04-01"}
        url = self.phone.public(WEBHOOK)
        started = time.monotonic()
        response = self.phone.post(url, params)
        answer = Answer(url, response.status_code, time.monotonic() - started, response.text)
        root = check_messaging_answer(answer, response.headers.get("Content-Type", ""))
        return [(message.findtext("Body") or message.text or "").strip() for message in root.iter("Message")]

    def show(self, bodies: list[str]) -> None:
        if not bodies:
            print("[no reply in the answer; in REST mode replies go out through Twilio's Messages API]",
                  file=self.out)
        for body in bodies:
            print("bridge: " + body.replace("\n", "\n        "), file=self.out)

    def fail(self, message: str) -> int:
        self.out.flush()
        print(f"chat: {message}", file=self.err)
        return FAILED


def check_messaging_answer(answer: Answer, content_type: str) -> ET.Element:
    """Twilio's rules for a messaging webhook's answer; the parsed <Response> when they hold."""
    where = f"{answer.url} answered"
    if answer.status != 200:
        raise TwilioWouldFail(f"{where} HTTP {answer.status}")
    if answer.seconds > MESSAGING_WEBHOOK_TIMEOUT:
        raise TwilioWouldFail(f"{where} after {answer.seconds:.1f}s; Twilio waits {MESSAGING_WEBHOOK_TIMEOUT:g}s")
    if content_type.split(";")[0].strip() not in ("text/xml", "application/xml"):
        raise TwilioWouldFail(f"{where} with content type {content_type!r}")
    try:
        root = ET.fromstring(answer.body.encode("utf-8"))
    except ET.ParseError as exc:
        raise TwilioWouldFail(f"{where} XML that does not parse: {exc}") from exc
    if root.tag != "Response":
        raise TwilioWouldFail(f"{where} <{root.tag}>, not <Response>")
    for message in root:
        if message.tag not in ("Message", "Redirect"):
            raise TwilioWouldFail(f"{where} <{message.tag}>, not a messaging verb")
        body = message.findtext("Body") or message.text or ""
        if len(body) > BODY_LIMIT:
            raise TwilioWouldFail(f"{where} a <Message> of {len(body)} characters; the limit is {BODY_LIMIT}")
        if message.tag == "Message" and not body.strip() and message.find("Media") is None:
            raise TwilioWouldFail(f"{where} an empty <Message> (error 14103)")
    return root
