"""What a WhatsApp conversation leaves in the SQLite state store, read from the file itself."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import AUTH_TOKEN
from tests.whatsapp.test_twiml import new_number
from twilio_bridge import state
from twilio_bridge.config import Settings
from twilio_bridge.state import SqliteStore
from twilio_bridge.testing.standin import RasaStandIn
from twilio_bridge.testing.whatsapp_user import WhatsAppUser


def keys(settings: Settings) -> list[str]:
    path = settings.state_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return sorted(key for (key,) in db.execute("SELECT key FROM kv"))


def test_a_menu_is_stored_while_it_is_open_and_only_then(bridge_url: str, settings: Settings,
                                                         standin: RasaStandIn) -> None:
    user = WhatsAppUser(bridge_url, AUTH_TOKEN, number=new_number())
    menu_key = f"whatsapp:menu:{user.address}"
    user.send("me robaron la tarjeta")
    assert menu_key not in keys(settings)  # a turn without buttons, after none, writes no menu
    user.send("1234")
    assert menu_key in keys(settings)
    user.send("1")
    assert menu_key not in keys(settings)
    assert [r["message"] for r in standin.received] == ["me robaron la tarjeta", "1234", "/affirm"]


def test_expired_keys_leave_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "PURGE_SECONDS", 0.0)
    store = SqliteStore(tmp_path / "s.db")
    store.put("whatsapp:seen:SM1", {}, ttl=0.05)
    store.incr("whatsapp:rate:whatsapp:+1555", ttl=0.05)
    store.put("whatsapp:menu:whatsapp:+1555", {"buttons": []}, ttl=60)
    time.sleep(0.1)
    store.add("whatsapp:seen:SM2", {}, ttl=60)
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert sorted(key for (key,) in db.execute("SELECT key FROM kv")) == ["whatsapp:menu:whatsapp:+1555",
                                                                           "whatsapp:seen:SM2"]
