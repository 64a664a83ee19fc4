#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine: system packages (as root or with sudo) and Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null; then
  pkgs=(dataset-fashion-mnist chromium chromium-driver)
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
  fi
fi
python3 -m pip install -q -r requirements.txt
python3 -m pip install -q --no-deps -e .
