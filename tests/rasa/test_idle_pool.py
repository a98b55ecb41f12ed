"""The pools behind the Rasa client: a connection idle for the limit is reopened, over TLS as in the clear."""
from __future__ import annotations

import json
from pathlib import Path

from tests.ops_tools import self_signed
from tests.rasa.kept_alive import FakeClock, KeptAliveServer
from twilio_bridge.rasa.idle_pool import IDLE_LIMIT, IdleLimitedHTTPSConnectionPool, IdleLimitedPoolManager


def test_over_tls_an_idle_connection_is_reopened_and_a_busy_one_kept(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "rasa.test", ip="127.0.0.1")
    clock = FakeClock()
    with KeptAliveServer(clock, closes_after=IDLE_LIMIT + 1, tls=(cert, key)) as server:
        manager = IdleLimitedPoolManager(clock=clock, ca_certs=str(cert), retries=False)
        assert isinstance(manager.connection_from_url(server.webhook_url), IdleLimitedHTTPSConnectionPool)
        body = json.dumps({"sender": "CA1", "message": "hola"})
        answers = [manager.request("POST", server.webhook_url, body=body).status]
        answers.append(manager.request("POST", server.webhook_url, body=body).status)
        clock.advance(IDLE_LIMIT + 1.5)
        answers.append(manager.request("POST", server.webhook_url, body=body).status)
        manager.clear()
    assert answers == [200, 200, 200]
    assert len(server.accepted) == 2  # the first two requests on one connection, the third on a new one
    assert server.closed_on_arrival == 0
