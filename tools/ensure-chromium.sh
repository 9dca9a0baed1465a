#!/usr/bin/env bash
# The control panel's page is tested in Debian's Chromium (tests/panel/test_panel_browser.py). `make test`
# installs it once when it is missing (Debian/Ubuntu, as root or with sudo); later runs find it and do nothing.
set -euo pipefail
command -v chromium > /dev/null 2>&1 && exit 0
if ! command -v apt-get > /dev/null 2>&1; then
  echo "ensure-chromium: no chromium and no apt-get: the browser test will be skipped (install Chromium yourself)" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "ensure-chromium: installing Debian's chromium for the panel's browser test" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium > /dev/null
