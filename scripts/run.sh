#!/usr/bin/env bash
# Install wstund into a venv and run it on its embedded defaults (127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
if command -v apt-get >/dev/null && ! python3 -m venv --help >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Editable, like scripts/test.sh: both share .venv, and neither undoes the other's install.
.venv/bin/pip install -q -e .
exec .venv/bin/wstund "$@"
