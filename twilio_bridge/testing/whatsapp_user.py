"""Plays a WhatsApp (or SMS) user writing to the bridge: posts inbound messages signed as Twilio signs them.

Replies come back in the webhook's TwiML (TwiML mode; checked the way Twilio takes them) or through
the Messages API (REST mode; a `FakeTwilioAPI` records them). Used by the tests and the chat simulator.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import requests

from .. import routes
from ..limits import MESSAGE_CHARACTERS, TWIML_BYTES, TWIML_MESSAGES, WEBHOOK_TIMEOUT
from .phone import Answer, TwilioPhone, TwilioWouldFail, sid, twiml_document


@dataclass(frozen=True)
class Reply:
    body: str
    media: tuple[str, ...] = ()


@dataclass
class Posted:
    """One inbound message as Twilio posted it, and the bridge's answer."""
    sid: str
    params: dict[str, str]
    answer: Answer
    replies: list[Reply] = field(default_factory=list)  # the <Message>s in the answer

    @property
    def seconds(self) -> float:
        return self.answer.seconds


class WhatsAppUser:
    def __init__(self, bridge_url: str, auth_token: str | None, number: str = "+5215512345678",
                 bridge_number: str = "+14155238886", profile_name: str = "Ana", channel: str = "whatsapp",
                 public_base_url: str | None = None, session: requests.Session | None = None):
        self.twilio = TwilioPhone(bridge_url, auth_token, public_base_url, session=session)
        prefix = "whatsapp:" if channel == "whatsapp" else ""
        self.address = prefix + number
        self.bridge_address = prefix + bridge_number
        self.number = number
        self.profile_name = profile_name
        self.channel = channel

    def params(self, body: str = "", media: tuple[tuple[str, str], ...] = (), button_payload: str | None = None,
               button_text: str | None = None, message_sid: str | None = None,
               list_id: str | None = None) -> dict[str, str]:
        """As Twilio posts a message: a tap on a quick reply carries `button_payload` (its id) and
        `button_text`; a choice from a list picker carries `list_id` and the item's title as `button_text`."""
        message_sid = message_sid or sid("MM" if media else "SM")
        kind = ("button" if button_payload else "interactive" if list_id
                else ("audio" if media[0][1].startswith("audio/") else "image") if media and not body else "text")
        params = {"MessageSid": message_sid, "SmsMessageSid": message_sid, "SmsSid": message_sid,
                  "AccountSid": self.twilio.account_sid, "From": self.address, "To": self.bridge_address,
                  "Body": body, "NumMedia": str(len(media)), "NumSegments": "1", "SmsStatus": "received",
                  "ApiVersion": "2010-04-01",
                  "MessageType": kind}
        if self.channel == "whatsapp":
            params.update(ProfileName=self.profile_name, WaId=self.number.lstrip("+"))
        for index, (url, content_type) in enumerate(media):
            params[f"MediaUrl{index}"] = url
            params[f"MediaContentType{index}"] = content_type
        if button_payload is not None:
            params.update(ButtonPayload=button_payload, ButtonText=button_text or body)
        if list_id is not None:
            params.update(ListId=list_id, ListTitle=button_text or body)
        return params

    def send(self, body: str = "", media: tuple[tuple[str, str], ...] = (), button_payload: str | None = None,
             button_text: str | None = None, message_sid: str | None = None, list_id: str | None = None) -> Posted:
        """Write one message; `media` is ((url, content type), ...)."""
        return self.post(self.params(body, media, button_payload, button_text, message_sid, list_id))

    def post(self, params: dict[str, str], headers: dict[str, str] | None = None) -> Posted:
        answer = self.twilio.fetch(self.twilio.public(routes.WHATSAPP), params, headers)
        answer.root = check_messaging_answer(answer, answer.content_type)
        replies = [Reply((m.findtext("Body") or m.text or "").strip(), tuple((e.text or "") for e in m.findall("Media")))
                   for m in answer.root.iter("Message")]
        return Posted(params["MessageSid"], params, answer, replies)

    def resend(self, posted: Posted) -> Posted:
        """Twilio's retry of the same message after a connection failure."""
        return self.post(posted.params, {"I-Twilio-Idempotency-Token": f"{posted.sid}-retry"})

    def report_status(self, message_sid: str, status: str, error_code: str | None = None) -> int:
        """Twilio's status callback for a message the bridge sent to this user."""
        params = {"MessageSid": message_sid, "SmsSid": message_sid, "AccountSid": self.twilio.account_sid,
                  "MessageStatus": status, "SmsStatus": status, "From": self.bridge_address, "To": self.address,
                  "ApiVersion": "2010-04-01"}
        if error_code:
            params["ErrorCode"] = error_code
        return self.twilio.post(self.twilio.public(routes.WHATSAPP_STATUS), params).status_code


def check_messaging_answer(answer: Answer, content_type: str) -> ET.Element:
    """Twilio's rules for a messaging webhook's answer; the parsed <Response> when they hold."""
    where = f"{answer.url} answered"
    root = twiml_document(answer, content_type, WEBHOOK_TIMEOUT, TWIML_BYTES)
    if len(root.findall("Message")) > TWIML_MESSAGES:
        raise TwilioWouldFail(f"{where} {len(root.findall('Message'))} <Message>s; Twilio sends {TWIML_MESSAGES} at most")
    for message in root:
        if message.tag not in ("Message", "Redirect"):
            raise TwilioWouldFail(f"{where} <{message.tag}>, not a messaging verb")
        body = message.findtext("Body") or message.text or ""
        if len(body) > MESSAGE_CHARACTERS:
            raise TwilioWouldFail(f"{where} a <Message> of {len(body)} characters; the limit is {MESSAGE_CHARACTERS}")
        if message.tag == "Message" and not body.strip() and message.find("Media") is None:
            raise TwilioWouldFail(f"{where} an empty <Message> (error 14103)")
    return root
