"""twilio_bridge.twilio_rest: the one Twilio REST client, ready before the first request needs it."""
from __future__ import annotations

import subprocess
import sys

from tests.servers import ROOT

FIRST_USES = """
import sys
from twilio_bridge.twilio_rest import TWILIO_API_ORIGIN, twilio_client
client = twilio_client("AC" + "0" * 32, "0" * 32, sys.argv[1], 5.0)
loaded = set(sys.modules)
client.messages, client.calls, client.messaging.v2.typing_indicator, client.content.v1.contents
print(sorted(name for name in set(sys.modules) - loaded if name.startswith("twilio")))
"""


def test_the_apis_the_bridge_uses_are_loaded_when_the_client_is_built_not_on_first_use() -> None:
    """twilio imports an API's modules on its first use (95 ms of CPU): a worker's first WhatsApp reply must
    not pay it while webhooks wait, with Twilio's own origin as with a local one."""
    for origin in ("https://api.twilio.com", "http://127.0.0.1:9"):
        done = subprocess.run([sys.executable, "-c", FIRST_USES, origin], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, check=True)
        assert done.stdout.strip() == "[]", (origin, done.stdout)
