#!/usr/bin/env bash
# Debian packages the tests use, installed once by `make test` when missing (Debian/Ubuntu, as root or with
# sudo); later runs find them and do nothing:
#   chromium             the control panel's page (tests/panel/test_panel_browser.py)
#   mesa-vulkan-drivers  a headless Rerun viewer (tests/sinks/test_sinks_serve.py): without a Vulkan driver the
#                        viewer falls back to OpenGL on llvmpipe and panics on this machine kind
set -euo pipefail
missing=()
command -v chromium > /dev/null 2>&1 || missing+=(chromium)
ls /usr/share/vulkan/icd.d/lvp_icd.*.json > /dev/null 2>&1 || missing+=(mesa-vulkan-drivers)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get > /dev/null 2>&1; then
  echo "ensure-test-packages: missing ${missing[*]} and no apt-get: the tests that need them skip (install them yourself)" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "ensure-test-packages: installing Debian's ${missing[*]} for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
