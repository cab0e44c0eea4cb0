#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet.
# Used by the Makefile and the benchmark scripts so that a fresh machine needs no manual step.
set -euo pipefail
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# One retry: an apt run here has been seen to fail once with a dpkg stat error and pass again.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { sleep 2; $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
