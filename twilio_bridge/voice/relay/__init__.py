"""Relay mode (VOICE_MODE=relay): a call over Twilio ConversationRelay, one WebSocket per call, text both ways."""
