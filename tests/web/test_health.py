"""GET /health: liveness for anyone, revealing nothing and calling nothing; the detail (Rasa, its action
server, the state store) for operators only, by the rule /metrics uses."""
from __future__ import annotations

import requests

from tests.conftest import ActionServer
from tests.servers import free_port
from twilio_bridge.testing.standin import RasaStandIn

THROUGH_NGINX = {"X-Forwarded-For": "203.0.113.9"}


def test_health_reports_rasa_and_state(bridge_url: str, reconfigure) -> None:
    healthy = requests.get(bridge_url + "/health", timeout=5).json()
    assert healthy["status"] == "ok" and healthy["rasa"]["reachable"] and healthy["state"]["reachable"]
    assert healthy["config"]["signature_validation"] is True and healthy["action_server"] == {"configured": False}
    down = reconfigure(rasa_webhook_url=f"http://127.0.0.1:{free_port()}/webhooks/rest/webhook")
    degraded = requests.get(down.base_url + "/health", timeout=5).json()
    assert degraded["status"] == "degraded" and degraded["rasa"]["reachable"] is False


def test_health_from_the_internet_reveals_nothing_and_calls_nothing(reconfigure, action_server: ActionServer,
                                                                    standin: RasaStandIn) -> None:
    phone = reconfigure(action_server_url=action_server.url, metrics_token="ops-token-0123456789")
    for headers in (THROUGH_NGINX, {}, {"Authorization": "Bearer wrong"}):
        public = requests.get(phone.base_url + "/health", headers=headers, timeout=5)
        assert public.status_code == 200 and public.json() == {"status": "ok"}
    assert action_server.hits == 0
    detail = requests.get(phone.base_url + "/health", headers={**THROUGH_NGINX,
                                                              "Authorization": "Bearer ops-token-0123456789"}, timeout=5)
    assert detail.json()["rasa"]["reachable"] is True and action_server.hits == 1


def test_health_is_degraded_when_rasa_answers_but_its_action_server_is_down(reconfigure,
                                                                           action_server: ActionServer) -> None:
    phone = reconfigure(action_server_url=action_server.url)
    ready = requests.get(phone.base_url + "/health", timeout=5).json()
    assert ready["status"] == "ok" and ready["action_server"] == {"configured": True, "status": "ok",
                                                                  "reachable": True}
    action_server.up = False
    down = requests.get(phone.base_url + "/health", timeout=5).json()
    assert down["status"] == "degraded" and down["rasa"]["reachable"] is True
    assert down["action_server"]["reachable"] is False and down["action_server"]["error"] == "HTTP 503"
