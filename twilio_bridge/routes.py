"""Every path the bridge serves, named once: the routes, the TwiML that points Twilio back at them,
the CLI's `check` and the test doubles all read them from here (operators, nginx and tests rely on them: contracts).
Also how a WebSocket route's URL follows from the bridge's http(s) one."""
from __future__ import annotations

WEBHOOKS = "/webhook/twilio"

# Voice, gather mode
VOICE = f"{WEBHOOKS}/voice"
SPEECH = f"{WEBHOOKS}/speech"
POLL = f"{WEBHOOKS}/poll"
DIAL_RESULT = f"{WEBHOOKS}/dial-result"
FALLBACK = f"{WEBHOOKS}/fallback"
CALL_STATUS = f"{WEBHOOKS}/status"

# Voice, relay mode (ConversationRelay)
RELAY = f"{WEBHOOKS}/relay"  # the WebSocket
RELAY_END = f"{WEBHOOKS}/relay/end"  # <Connect action>: the session ended

# WhatsApp and SMS
WHATSAPP = f"{WEBHOOKS}/whatsapp"
WHATSAPP_STATUS = f"{WEBHOOKS}/whatsapp/status"

# Operations
HEALTH = "/health"
METRICS = "/metrics"

# The outbound API (operators' systems, Bearer OUTBOUND_API_TOKEN): the business starts the conversation
OUTBOUND = "/api/outbound"
OUTBOUND_MESSAGES = f"{OUTBOUND}/messages"
OUTBOUND_MESSAGE = f"{OUTBOUND_MESSAGES}/<message_id>"
OUTBOUND_CALLS = f"{OUTBOUND}/calls"
OUTBOUND_CALL = f"{OUTBOUND_CALLS}/<call_id>"


def websocket_url(http_url: str) -> str:
    """The ws(s):// twin of an http(s):// URL (an origin, or a whole URL): where Twilio opens a WebSocket route,
    and the URL it signs the upgrade for."""
    scheme, separator, rest = http_url.partition("://")
    if scheme not in ("http", "https") or not separator:
        raise ValueError(f"not an http(s) URL: {http_url}")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"
