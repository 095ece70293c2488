#!/usr/bin/env bash
# Debian's Chromium (and an emoji font, for readable screenshots) for the browser tests. Playwright drives it
# (`pip install playwright` is in requirements.txt; no browser is downloaded). Needs root, as CI has.
set -euo pipefail
if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "emoji"; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium fonts-noto-color-emoji >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q chromium fonts-noto-color-emoji >/dev/null; }
/usr/bin/chromium --version
