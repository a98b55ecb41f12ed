"""Twilio's documented limits, stated once: the product keeps inside them, the test doubles enforce them."""
from __future__ import annotations

WEBHOOK_TIMEOUT = 15.0  # seconds Twilio waits for any webhook's answer before the caller hears an error
TWIML_BYTES = 64_000  # a TwiML document
SAY_CHARACTERS = 3000  # one <Say> with a Polly voice
GATHER_CHILDREN = frozenset({"Say", "Play", "Pause"})  # the only verbs a <Gather> may hold
GATHER_INPUTS = ("dtmf", "speech", "dtmf speech")  # written as one string, never as a list
MESSAGE_CHARACTERS = 1600  # one <Message> body, or one message sent through the Messages API
TWIML_MESSAGES = 10  # <Message>s Twilio sends in answer to one incoming message (more: warning 14109)

# WhatsApp through the Content API: quick replies and list pickers sent inside the 24-hour session
QUICK_REPLY_BUTTONS = 3  # a quick reply sent in session without WhatsApp's approval
QUICK_REPLY_TITLE = 20  # characters of a quick-reply button's title
LIST_ITEMS = 10  # items of a list picker
LIST_ITEM = 24  # characters of a list item's title
LIST_ITEM_DESCRIPTION = 72  # characters of a list item's description
LIST_BUTTON = 20  # characters of the button that opens the list
CONTENT_BODY = 1024  # characters of a quick reply's or list picker's body
CONTENT_ID = 200  # characters of a button's or list item's id, which comes back when it is tapped
WHATSAPP_MEDIA_BYTES = 16 * 1024 * 1024  # an audio attachment on WhatsApp
