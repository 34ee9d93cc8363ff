#!/usr/bin/env bash
# Installs Debian's chromium for the web page's browser test (tests/test_web.py), which drives
# it headless through playwright; playwright's own browser download is never used (no network
# beyond the package registries). The system's apt sources are left as they are.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null; then echo "install_browser: $name present"; exit 0; fi
done
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "install_browser: not root and no sudo; install chromium yourself (the browser test skips without it)" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "install_browser: apt-get update failed; trying what is cached" >&2
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  || echo "install_browser: chromium failed to install; the browser test will skip" >&2
echo "install_browser: done"
