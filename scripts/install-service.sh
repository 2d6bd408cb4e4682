#!/usr/bin/env bash
# Install (or upgrade) wstund as a systemd service on Debian, from this checkout:
# system user and group `wstun`, a venv in /opt/wstun, `wstunctl` on the PATH, the config in
# /etc/wstun/wstund.toml (kept if present), the units in /etc/systemd/system, then start it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo bash "$0" "$@"; fi

# The system's interpreter, not one under a user's home (pyenv and the like): the service's
# user must be able to run it.
PYTHON=/usr/bin/python3
if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: wstund needs Python 3.11 or newer as $PYTHON (Debian 12 has it)" >&2
    exit 1
fi
getent group wstun >/dev/null || groupadd --system wstun
id -u wstun >/dev/null 2>&1 || useradd --system --gid wstun --home-dir /var/lib/wstun \
    --no-create-home --shell /usr/sbin/nologin wstun

"$PYTHON" -m venv --clear /opt/wstun
/opt/wstun/bin/pip install -q --upgrade pip
/opt/wstun/bin/pip install -q --upgrade .
ln -sf /opt/wstun/bin/wstunctl /usr/local/bin/wstunctl

install -d -m 0755 /etc/wstun
if [ ! -e /etc/wstun/wstund.toml ]; then
    install -m 0644 etc/wstun/wstund.toml /etc/wstun/wstund.toml
fi
/opt/wstun/bin/wstund --config /etc/wstun/wstund.toml --check-config

install -m 0644 systemd/wstund.service systemd/wstund.socket /etc/systemd/system/
if [ ! -d /run/systemd/system ]; then
    echo "error: systemd is not running here (a container?); everything else is installed." >&2
    echo "Start it by hand: install -d -o wstun -g wstun -m 0750 /run/wstun /var/lib/wstun &&" >&2
    echo "  runuser -u wstun -- env RUNTIME_DIRECTORY=/run/wstun STATE_DIRECTORY=/var/lib/wstun \\" >&2
    echo "  /opt/wstun/bin/wstund --config /etc/wstun/wstund.toml" >&2
    exit 1
fi
systemctl daemon-reload
systemctl enable wstund.service
systemctl restart wstund.service
systemctl --no-pager --lines=0 status wstund.service
echo "wstund is running. Try: sudo wstunctl status   (or add yourself to group wstun)"
