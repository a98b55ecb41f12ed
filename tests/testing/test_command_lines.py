"""The stand-ins' own command lines: every option says what it is for."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.servers import ROOT


@pytest.mark.parametrize(("module", "options"), [
    ("twilio_bridge.testing.standin", ["--host", "--port", "--delay", "--mode"]),
    ("twilio_bridge.testing.fake_twilio_api", ["--host", "--port", "--account-sid", "--auth-token"]),
])
def test_help_describes_every_option(module: str, options: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, check=True)
    # argparse prints "  --opt METAVAR   description", or the description on the lines after a long option
    entries = re.split(r"\n  (?=-)", done.stdout.split("options:", 1)[1])
    described = {entry.split()[0].rstrip(","): " ".join(entry.split()[1:]) for entry in entries if entry.strip()}
    for option in options:
        words = described[option].split()
        assert len([w for w in words if w.islower() and w.isalpha()]) >= 3, (option, described[option])
