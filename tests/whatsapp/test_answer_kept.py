"""TwiML mode keeps an answer for Twilio's retries as long as they need (minutes), not for days."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.conftest import AUTH_TOKEN
from twilio_bridge.config import Settings
from twilio_bridge.testing.whatsapp_user import WhatsAppUser


def test_an_answer_kept_for_retries_expires_within_ten_minutes(bridge_url: str, settings: Settings) -> None:
    user = WhatsAppUser(bridge_url, AUTH_TOKEN)
    first = user.send("hola")
    retry = user.resend(first)
    assert retry.answer.body == first.answer.body and first.replies
    database = Path(settings.state_url.removeprefix("sqlite:///"))
    with sqlite3.connect(database) as db:
        expires = db.execute("SELECT expires FROM kv WHERE key = ?", (f"whatsapp:seen:{first.sid}",)).fetchone()[0]
    assert 0 < expires - time.time() <= 600
