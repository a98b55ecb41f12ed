"""The request's fingerprint, on its own: the API refuses a lone surrogate before it is taken, so HTTP cannot show
that any JSON the parser returns has one."""
from __future__ import annotations

import hashlib
import json

from twilio_bridge.outbound.idempotency import fingerprint


def test_any_parsed_json_has_a_fingerprint_and_text_keeps_the_one_it_had() -> None:
    assert fingerprint({"n": "\ud800"}) != fingerprint({"n": "\ud801"})
    text = {"to": "whatsapp:+5215512345678", "body": "mañana 😀"}
    before = hashlib.sha256(json.dumps(text, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert fingerprint(text) == before
