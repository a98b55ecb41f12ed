"""GET /health: liveness, Rasa's reachability and the state store."""
from __future__ import annotations

import requests

from tests.servers import free_port


def test_health_reports_rasa_and_state(bridge_url: str, reconfigure) -> None:
    healthy = requests.get(bridge_url + "/health", timeout=5).json()
    assert healthy["status"] == "ok" and healthy["rasa"]["reachable"] and healthy["state"]["reachable"]
    assert healthy["config"]["signature_validation"] is True
    down = reconfigure(rasa_webhook_url=f"http://127.0.0.1:{free_port()}/webhooks/rest/webhook")
    degraded = requests.get(down.base_url + "/health", timeout=5).json()
    assert degraded["status"] == "degraded" and degraded["rasa"]["reachable"] is False
