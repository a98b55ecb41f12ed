"""The action server, started for real from rasa_project/ (on the shared real-server helpers)."""

import subprocess
import sys
from pathlib import Path
from typing import ContextManager, Dict

import requests

from tests.servers import running


def action_server(project_dir: Path, port: int, env: Dict[str, str], log: Path) -> ContextManager[subprocess.Popen]:
    """`python -m rasa_sdk --actions actions` from rasa_project/, ready when /health says ok."""
    return running(
        [sys.executable, "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
        cwd=project_dir, env=env, log=log,
        ready=lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json() == {"status": "ok"},
    )
