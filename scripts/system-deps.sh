#!/usr/bin/env bash
# Debian tools the test-suite drives for real: age (opening archives as an operator would),
# zstd, Debian's own python3 (the hand-verify commands of docs/archive-format.md run with
# PATH=/usr/bin:/bin, standard library only), gettext (compilemessages) and Chromium
# (browser tests). Installed when missing and we are root; otherwise we say what to install.
set -euo pipefail
need=()
command -v age >/dev/null || need+=(age)
command -v zstd >/dev/null || need+=(zstd)
[[ -x /usr/bin/python3 ]] || need+=(python3)
command -v msgfmt >/dev/null || need+=(gettext)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
((${#need[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "Please install these Debian packages: ${need[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
