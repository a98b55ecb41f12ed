"""Fixtures for the assistant's tests: its YAML, its actions, and real trackers."""

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2] / "rasa_project"
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from rasa_sdk import Tracker  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rasa_license: needs RASA_LICENSE and rasa-pro (trains and runs the real assistant)",
    )


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return PROJECT_DIR


@pytest.fixture(scope="session")
def domain() -> Dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / "domain.yml").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def demo_card_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own demo store, never the one under rasa_project/."""
    path = tmp_path / "cards.db"
    monkeypatch.setenv("CARD_SERVICE_DB", str(path))
    monkeypatch.delenv("CARD_SERVICE_URL", raising=False)
    return path


def user_event(text: str, intent: str, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {
        "event": "user",
        "text": text,
        "parse_data": {"intent": {"name": intent, "confidence": 1.0}, "entities": [], "text": text},
        "metadata": metadata or {},
    }


def make_tracker(
    slots: Optional[Dict[str, Any]] = None,
    events: Optional[List[Dict[str, Any]]] = None,
    latest_text: str = "",
    latest_intent: str = "",
    active_loop: Optional[Dict[str, Any]] = None,
    sender_id: str = "CA0123456789abcdef",
) -> Tracker:
    latest = {"text": latest_text, "intent": {"name": latest_intent}, "entities": []}
    return Tracker(
        sender_id=sender_id,
        slots=dict(slots or {}),
        latest_message=latest,
        events=list(events or []),
        paused=False,
        followup_action=None,
        active_loop=active_loop or {},
        latest_action_name="action_listen",
    )
