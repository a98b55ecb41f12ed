"""Every path the bridge serves, named once: the routes, the TwiML that points Twilio back at them,
the CLI's `check` and the test doubles all read them from here (operators, nginx and tests rely on them: contracts)."""
from __future__ import annotations

WEBHOOKS = "/webhook/twilio"

# Voice, gather mode
VOICE = f"{WEBHOOKS}/voice"
SPEECH = f"{WEBHOOKS}/speech"
POLL = f"{WEBHOOKS}/poll"
DIAL_RESULT = f"{WEBHOOKS}/dial-result"
FALLBACK = f"{WEBHOOKS}/fallback"
CALL_STATUS = f"{WEBHOOKS}/status"

# WhatsApp and SMS
WHATSAPP = f"{WEBHOOKS}/whatsapp"
WHATSAPP_STATUS = f"{WEBHOOKS}/whatsapp/status"

# Operations
HEALTH = "/health"
METRICS = "/metrics"
