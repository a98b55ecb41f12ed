"""Twilio voice and WhatsApp bridge for a Rasa Pro assistant."""
