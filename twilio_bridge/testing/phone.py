"""Plays Twilio's part in a phone call: signs each webhook as Twilio does, follows the TwiML.

Used by the tests and by `python twilio_voice_server.py call`. Every answer is checked the
way Twilio would take it; anything that would make a real caller hear "an application
error has occurred" raises TwilioWouldFail.
"""
from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

from .. import routes
from ..limits import GATHER_CHILDREN, GATHER_INPUTS, SAY_CHARACTERS, TWIML_BYTES, WEBHOOK_TIMEOUT
from ..web.hooks import IDEMPOTENCY_HEADER
from ..web.signature import sign

VERBS = {"Say", "Play", "Pause", "Gather", "Redirect", "Dial", "Hangup", "Reject", "Record", "Enqueue", "Leave",
         "Connect", "Refer", "Sms"}
GATHER_INPUTS_ACCEPTED = {*GATHER_INPUTS, "speech dtmf"}  # Twilio takes either order; the bridge writes one
MAX_REDIRECTS = 10


class TwilioWouldFail(AssertionError):
    """The bridge answered something Twilio rejects: the caller would hear an application error."""


@dataclass
class Answer:
    url: str
    status: int
    seconds: float
    body: str
    root: ET.Element | None = None  # the parsed <Response>, once the answer passed its checks
    content_type: str = "text/xml"


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class TwilioPhone:
    """`base_url` is where requests go; `public_base_url` is the origin Twilio would sign (default: the same)."""

    def __init__(self, base_url: str, auth_token: str | None, public_base_url: str | None = None,
                 session: requests.Session | None = None, timeout: float = WEBHOOK_TIMEOUT,
                 verify: bool | str = True):
        self.base_url = base_url.rstrip("/")
        self.public_base_url = (public_base_url or base_url).rstrip("/")
        self.auth_token = auth_token
        self.session = session or requests.Session()
        self.timeout = timeout
        self.verify = verify
        self.account_sid = "AC" + "0" * 32

    def public(self, url_or_path: str, relative_to: str | None = None) -> str:
        return urljoin(relative_to or self.public_base_url + "/", url_or_path)

    def post(self, public_url: str, params: dict[str, str], headers: dict[str, str] | None = None) -> requests.Response:
        """POST form parameters to the bridge, signed for the public URL as Twilio signs it, with a fresh
        I-Twilio-Idempotency-Token as Twilio marks every webhook (a retry passes the first one's in `headers`)."""
        parts = urlsplit(public_url)
        target = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        signed = {IDEMPOTENCY_HEADER: secrets.token_hex(16), **(headers or {})}
        if self.auth_token:
            signed["X-Twilio-Signature"] = sign(self.auth_token, public_url, params)
        return self.session.post(target, data=params, headers=signed, timeout=self.timeout + 5,
                                 allow_redirects=False, verify=self.verify)

    def fetch(self, public_url: str, params: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
        """POST a webhook as Twilio does and time its answer; checking it is the caller's (voice or messaging)."""
        started = time.monotonic()
        response = self.post(public_url, params, headers)
        return Answer(public_url, response.status_code, time.monotonic() - started, response.text,
                      content_type=response.headers.get("Content-Type", ""))

    def call(self, from_: str = "+525512345678", to: str = "+525500000000", call_sid: str | None = None) -> PhoneCall:
        call = PhoneCall(self, call_sid or sid("CA"), from_, to)
        call.start()
        return call

    def answer(self, call_sid: str, from_: str, to: str, status_callback: str | None = None,
               answered_by: str | None = None) -> PhoneCall:
        """The customer picks up a call the bridge placed through the Calls API: Twilio posts the voice webhook
        with Direction outbound-api (and AnsweredBy when the call asked for answering-machine detection), and
        the end of the call to the StatusCallback the Calls API was given."""
        call = PhoneCall(self, call_sid, from_, to, direction="outbound-api", answered_by=answered_by,
                         status_callback=status_callback)
        call.start()
        return call


@dataclass
class PhoneCall:
    phone: TwilioPhone
    sid: str
    from_: str
    to: str
    state: str = "ringing"
    heard: list[str] = field(default_factory=list)
    transcript: list[tuple[str, str]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    dialed: str | None = None
    gather: dict[str, str] = field(default_factory=dict)
    direction: str = "inbound"
    answered_by: str | None = None
    status_callback: str | None = None
    _gather_url: str | None = None
    _dial_url: str | None = None
    _after_gather: list[ET.Element] = field(default_factory=list)
    _document_url: str = ""

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    def params(self, **extra: str) -> dict[str, str]:
        base = {"CallSid": self.sid, "AccountSid": self.phone.account_sid, "From": self.from_, "To": self.to,
                "Caller": self.from_, "Called": self.to, "CallStatus": "in-progress", "Direction": self.direction,
                "ApiVersion": "2010-04-01"}
        if self.answered_by:
            base["AnsweredBy"] = self.answered_by
        base.update(extra)
        return base

    def start(self) -> None:
        self.heard = []
        self._fetch(self.phone.public(routes.VOICE),
                    self.params(CallStatus="ringing" if self.direction == "inbound" else "in-progress"))

    def say(self, text: str, confidence: float = 0.92) -> list[str]:
        self.transcript.append(("caller", text))
        return self._respond(SpeechResult=text, Confidence=f"{confidence:.8f}")

    def press(self, digits: str) -> list[str]:
        self.transcript.append(("caller", f"#{digits}"))
        return self._respond(Digits=digits)

    def silence(self) -> list[str]:
        """The caller says nothing: Twilio posts an empty result, or runs the verbs after the <Gather>."""
        self.transcript.append(("caller", "(silence)"))
        self._expect("gathering")
        if self.gather.get("actionOnEmptyResult") == "true":
            return self._respond()
        self.heard = []
        self._run(self._after_gather, self._document_url)
        return self.heard

    def dial_result(self, status: str = "completed", duration: int = 60) -> list[str]:
        """The <Dial> ended: the person answered and hung up, or was busy, or did not answer."""
        self._expect("dialing")
        self.heard = []
        if self._dial_url is None:
            self.state = "ended"
            return self.heard
        self._fetch(self._dial_url, self.params(DialCallStatus=status, DialCallDuration=str(duration)))
        return self.heard

    def hangup(self, status: str = "completed") -> int:
        """The call is over: Twilio posts the status callback."""
        self.state = "ended"
        response = self.phone.post(self.status_callback or self.phone.public(routes.CALL_STATUS),
                                   self.params(CallStatus=status, CallDuration="42"))
        return response.status_code

    def follow(self, public_url: str, params: dict[str, str]) -> list[str]:
        """Twilio fetches `public_url` for this call (a <Connect action>, say) and runs the TwiML it gets."""
        self.heard = []
        self._fetch(public_url, params)
        return self.heard

    def _respond(self, **result: str) -> list[str]:
        self._expect("gathering")
        self.heard = []
        assert self._gather_url is not None
        self._fetch(self._gather_url, self.params(**result))
        return self.heard

    def _expect(self, state: str) -> None:
        if self.state != state:
            raise RuntimeError(f"the call is {self.state}, not {state}; heard: {self.heard}")

    def _fetch(self, url: str, params: dict[str, str], redirects: int = 0) -> None:
        if redirects > MAX_REDIRECTS:
            raise TwilioWouldFail(f"more than {MAX_REDIRECTS} redirects in a row")
        answer = self.phone.fetch(url, params)
        self.answers.append(answer)
        answer.root = check_voice_answer(answer, answer.content_type)
        self._document_url = url
        self._run(list(answer.root), url, redirects)

    def _run(self, verbs: list[ET.Element], url: str, redirects: int = 0) -> None:
        for index, verb in enumerate(verbs):
            if verb.tag == "Say":
                self._hear(verb)
            elif verb.tag == "Gather":
                for child in verb:
                    if child.tag == "Say":
                        self._hear(child)
                self.state = "gathering"
                self.gather = dict(verb.attrib)
                self._gather_url = self.phone.public(verb.get("action") or urlsplit(url).path, url)
                self._after_gather = verbs[index + 1:]
                return
            elif verb.tag == "Redirect":
                self._fetch(self.phone.public((verb.text or "").strip(), url), self.params(), redirects + 1)
                return
            elif verb.tag == "Dial":
                self.state = "dialing"
                number = verb.find("Number")
                self.dialed = ((number.text if number is not None else verb.text) or "").strip()
                self._dial_url = self.phone.public(verb.get("action"), url) if verb.get("action") else None
                self.transcript.append(("twilio", f"dial {self.dialed}"))
                return
            elif verb.tag in ("Hangup", "Reject"):
                self.state = "ended"
                return
        self.state = "ended"  # Twilio hangs up when the document runs out of verbs

    def _hear(self, say: ET.Element) -> None:
        text = (say.text or "").strip()
        self.heard.append(text)
        self.transcript.append(("bridge", text))


def twiml_document(answer: Answer, content_type: str, webhook_timeout: float,
                   max_bytes: int | None = None) -> ET.Element:
    """The rules every webhook's answer meets for Twilio (voice or messaging); the parsed <Response>."""
    where = f"{answer.url} answered"
    if answer.status != 200:
        raise TwilioWouldFail(f"{where} HTTP {answer.status}")
    if answer.seconds > webhook_timeout:
        raise TwilioWouldFail(f"{where} after {answer.seconds:.1f}s; Twilio waits {webhook_timeout:g}s")
    if content_type.split(";")[0].strip() not in ("text/xml", "application/xml"):
        raise TwilioWouldFail(f"{where} with content type {content_type!r}")
    if max_bytes is not None and len(answer.body.encode("utf-8")) > max_bytes:
        raise TwilioWouldFail(f"{where} {len(answer.body.encode())} bytes; TwiML is limited to {max_bytes // 1000} kB")
    try:
        root = ET.fromstring(answer.body.encode("utf-8"))
    except ET.ParseError as exc:
        raise TwilioWouldFail(f"{where} XML that does not parse: {exc}") from exc
    if root.tag != "Response":
        raise TwilioWouldFail(f"{where} <{root.tag}>, not <Response>")
    return root


def check_voice_answer(answer: Answer, content_type: str) -> ET.Element:
    """Twilio's rules for a voice webhook's answer; the parsed <Response> when they all hold."""
    where = f"{answer.url} answered"
    root = twiml_document(answer, content_type, WEBHOOK_TIMEOUT, TWIML_BYTES)
    for verb in root:
        if verb.tag not in VERBS:
            raise TwilioWouldFail(f"{where} unknown verb <{verb.tag}>")
        if verb.tag == "Gather":
            if verb.get("input", "dtmf") not in GATHER_INPUTS_ACCEPTED:
                raise TwilioWouldFail(f"{where} <Gather input={verb.get('input')!r}>")
            for child in verb:
                if child.tag not in GATHER_CHILDREN:
                    raise TwilioWouldFail(f"{where} <{child.tag}> inside <Gather>")
    for say in root.iter("Say"):
        text = (say.text or "").strip()
        if not text:
            raise TwilioWouldFail(f"{where} an empty <Say> (error 13520)")
        if len(text) > SAY_CHARACTERS:
            raise TwilioWouldFail(f"{where} a <Say> of {len(text)} characters; the limit is {SAY_CHARACTERS}")
    return root
