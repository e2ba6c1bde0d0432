#!/usr/bin/env bash
# `make deps`: checks that the Debian packages the tests need
# (scripts/debian-packages.txt) are installed, and installs the missing ones with
# apt-get (as root, or through sudo). When it cannot, it says what to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "deps: kv-router needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none)); install it, then run make test again" >&2
  exit 1
fi

names=(); reasons=()
while read -r name reason; do
  case "$name" in ''|'#'*) continue ;; esac
  names+=("$name"); reasons+=("$reason")
done < scripts/debian-packages.txt

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps: this is not a Debian/Ubuntu system (no dpkg-query); install the equivalents of these yourself, then run make test again:" >&2
  for i in "${!names[@]}"; do echo "  ${names[$i]}  (${reasons[$i]})" >&2; done
  exit 1
fi

missing=()
for i in "${!names[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "${names[$i]}" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("${names[$i]}")
    echo "deps: ${names[$i]} is missing; the tests need it for: ${reasons[$i]}"
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "deps: all ${#names[@]} Debian packages the tests need are installed"
  exit 0
fi

by_hand="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
sudo=()
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
    sudo=(sudo)
  else
    echo "deps: installing needs root and sudo is not available here; run as root: $by_hand" >&2
    exit 1
  fi
fi
echo "deps: installing ${missing[*]} with ${sudo[*]:+sudo }apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "deps: apt-get could not install ${missing[*]} (see its message above). Check the apt sources and the network, or run as root: $by_hand" >&2
  exit 1
fi
echo "deps: installed ${missing[*]}"
