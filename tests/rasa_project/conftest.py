"""Fixtures for the assistant's tests: its YAML, its actions, and real trackers."""

import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2] / "rasa_project"
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))


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
