#!/usr/bin/env bash
# Installs the browser the `ui` interop suite drives; idempotent.
#   chromium, chromedriver -> Debian's chromium and chromium-driver packages
#                             (/usr/bin/chromium, /usr/bin/chromedriver)
# Selenium itself is a Python package: setup.sh puts it in the same venv as pika. Selenium is
# always given these two paths, so its Selenium Manager never downloads a browser or a driver.
set -euo pipefail

log() { printf 'setup-browser: %s\n' "$*" >&2; }

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  log "${missing[*]} missing and not running as root: apt-get install ${missing[*]}"
  exit 1
fi
log "installing ${missing[*]} (Debian packages)"
# Same guard as setup_tools.sh: no package may start a service during the install.
policy=/usr/sbin/policy-rc.d
restore=""
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && restore=1
fi
export DEBIAN_FRONTEND=noninteractive
status=0
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || status=$?
[[ -n $restore ]] && rm -f "$policy"
[[ $status -eq 0 ]] || { log "apt-get failed ($status)"; exit "$status"; }
[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] ||
  { log "/usr/bin/chromium or /usr/bin/chromedriver is still missing"; exit 1; }
