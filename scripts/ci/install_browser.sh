#!/usr/bin/env bash
# Install Debian's chromium for the web-viewer browser tests (tests/test_viewer_browser.py), if it is missing.
# Never fails the caller: without apt (or without root) the browser tests skip and say why.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; the browser tests will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_browser: not root and no sudo; the browser tests will skip" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
{ $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium; } >/tmp/install_browser.log 2>&1 \
  || echo "install_browser: apt-get install chromium failed (see /tmp/install_browser.log); the browser tests will skip" >&2
exit 0
