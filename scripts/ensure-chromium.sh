#!/usr/bin/env bash
# The status page's browser tests drive Debian's headless Chromium. Installs it when missing and
# the user may (root with apt); otherwise says why those tests will be skipped.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: installing Debian's chromium for the browser tests (about a minute)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "ensure-chromium: chromium missing and cannot be installed here: the browser tests will be skipped" >&2
fi
