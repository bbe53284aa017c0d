#!/usr/bin/env bash
# Install the system tools the tests drive, from the distribution (apt-get):
#   chromium    the report is checked in a real headless browser
#               (tests/report/test_report_browser.py);
#   shellcheck  actionlint lints the workflows' `run:` scripts with it
#               (tests/integrations/test_workflows.py).
# Idempotent: installs only what is missing. Never a browser download of its
# own (`playwright install` fetches one from a CDN; the tests launch this
# binary through Playwright's `executable_path` instead).
#   GATE_CHROMIUM=/path/to/chrome  use that browser (e.g. google-chrome on a
#                                  GitHub-hosted runner) and install none.
set -euo pipefail
browser=${GATE_CHROMIUM:-/usr/bin/chromium}
missing=()
[ -x "$browser" ] || missing+=(chromium)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_tools: ${missing[*]} missing and apt-get is not available;" \
       "install them (and set GATE_CHROMIUM to the browser's path)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install_system_tools: installing ${missing[*]} with apt-get"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
if [ ! -x "$browser" ] || ! command -v shellcheck >/dev/null 2>&1; then
  echo "install_system_tools: apt-get finished but ${missing[*]} is still missing" >&2
  exit 1
fi
