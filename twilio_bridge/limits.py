"""Twilio's documented limits, stated once: the product keeps inside them, the test doubles enforce them."""
from __future__ import annotations

WEBHOOK_TIMEOUT = 15.0  # seconds Twilio waits for any webhook's answer before the caller hears an error
TWIML_BYTES = 64_000  # a TwiML document
SAY_CHARACTERS = 3000  # one <Say> with a Polly voice
GATHER_CHILDREN = frozenset({"Say", "Play", "Pause"})  # the only verbs a <Gather> may hold
GATHER_INPUTS = ("dtmf", "speech", "dtmf speech")  # written as one string, never as a list
MESSAGE_CHARACTERS = 1600  # one <Message> body, or one message sent through the Messages API
