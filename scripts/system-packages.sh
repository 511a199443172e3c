#!/usr/bin/env bash
# Install Debian packages for commands that are missing, as root on Debian/Ubuntu only:
#   scripts/system-packages.sh COMMAND:PACKAGE [COMMAND:PACKAGE ...]
# Anywhere else it prints what to install and leaves the tests that need them to fail with that name.
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "setup apt_install packages=${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq </dev/null >/dev/null &&
         apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null; }; then
    echo "setup warning=apt_install_failed packages=${missing[*]}"
  fi
else
  echo "setup warning=missing_system_tools packages=${missing[*]} (install them with your package manager)"
fi
