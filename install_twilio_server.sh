#!/usr/bin/env bash
# Set up the bridge in this directory. Safe to run again: it only does what is missing.
#
#   ./install_twilio_server.sh          .venv with the pinned requirements; twilio.env from the example
#   ./install_twilio_server.sh --dev    the same, plus the system packages the tests start for real
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "install_twilio_server.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "install_twilio_server.sh: Python 3.11 or newer is required" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.requirements.sha256
wanted=$(sha256sum twilio_requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r twilio_requirements.txt
  echo "$wanted" > "$stamp"
fi

if [ ! -f twilio.env ]; then
  cp twilio.env.example twilio.env
  echo "install_twilio_server.sh: created twilio.env; set TWILIO_AUTH_TOKEN and the rest before starting"
fi

if [ "$DEV" = 1 ]; then
  missing=()
  for pair in nginx:nginx redis-server:redis-server; do
    command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "install_twilio_server.sh: tests that need ${missing[*]} will be skipped (install them as root)" >&2
    fi
  fi
fi
