#!/usr/bin/env bash
# CI: make sure Debian's Chromium and its chromedriver are installed, for the dashboard's browser
# test (tests/e2e/test_dashboard.py drives /usr/bin/chromium through /usr/bin/chromedriver with
# Selenium, and skips, saying why, where they are missing). Called by .ci/run before the tests.
# Idempotent: does nothing when both are there. Needs root (or sudo) to install.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium), $(/usr/bin/chromedriver --version 2>/dev/null | head -1)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: no apt-get here; install chromium and chromium-driver by hand (the browser test will skip)" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "browser: not root and no sudo: cannot install chromium (the browser test will skip)" >&2
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
/usr/bin/chromedriver --version | head -1
