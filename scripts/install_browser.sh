#!/usr/bin/env bash
# Install the headless browser the report tests drive (tests/report/test_report_browser.py).
# Idempotent: does nothing when a browser is already there. Uses the
# distribution's chromium through apt-get, never a browser download of its own
# (`playwright install` fetches one from a CDN; the tests launch this binary
# through Playwright's `executable_path` instead).
#   GATE_CHROMIUM=/path/to/chrome  use that browser (e.g. google-chrome on a
#                                  GitHub-hosted runner) and install nothing.
set -euo pipefail
browser=${GATE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$browser" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: $browser is missing and apt-get is not available;" \
       "install chromium and set GATE_CHROMIUM to its path" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install_browser: installing chromium with apt-get"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
if [ ! -x /usr/bin/chromium ]; then
  echo "install_browser: apt-get finished but /usr/bin/chromium is missing" >&2
  exit 1
fi
