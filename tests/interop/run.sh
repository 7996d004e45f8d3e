#!/usr/bin/env bash
# Runs the RabbitMQ tutorials with pika and with amqplib against the broker at $AMQP_URL.
#
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F tests/interop/run.sh [pika] [amqplib] [http] [ui] [tls]
#
# The http suite (rabbitmqadmin classic and v2, promtool, a real Prometheus and the
# RabbitMQ-Overview dashboard) also needs MGMT_URL and METRICS_URL, and installs its tools
# with setup_tools.sh. The ui suite (the web UI in headless Chromium, through Selenium) needs
# MGMT_URL, installs Debian's chromium and chromium-driver with setup_browser.sh, and saves
# its screenshots into $UI_SCREENSHOTS when that is set. The tls suite starts a Warren of its
# own ($INTEROP_WARREN_BIN, default target/debug/warren) with AMQPS and HTTPS listeners and
# certificates made with openssl, and drives it with pika, amqplib and rabbitmqadmin (classic
# and v2, from setup_tools.sh).
#
# Prints one PASS/FAIL line per test and ends with "N passed, M failed" alone on a line.
# Exits non-zero if any test failed (or none ran). Each suite runs under a hard time limit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}"
suite_seconds="${INTEROP_SUITE_SECONDS:-90}"

suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=(pika amqplib)

passed=0
failed=0

if ! "$here/setup.sh"; then
  echo "FAIL setup: tests/interop/setup.sh failed"
  echo "0 passed, 1 failed"
  exit 1
fi

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# run_suite NAME COMMAND...: runs a suite, echoes its lines, adds up its PASS/FAIL lines.
run_suite() {
  local name="$1"
  shift
  local rc=0 p f
  timeout -k 5 "$suite_seconds" "$@" | tee "$out" || rc=$?
  p="$(grep -c '^PASS ' "$out" || true)"
  f="$(grep -c '^FAIL ' "$out" || true)"
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "FAIL $name suite: killed after ${suite_seconds}s; the tests not listed above did not run"
    f=$((f + 1))
  elif [[ $rc -ne 0 && $f -eq 0 ]]; then
    echo "FAIL $name suite: exited with status $rc without reporting a failed test"
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}

for suite in "${suites[@]}"; do
  case "$suite" in
    pika) run_suite pika "$here/.venv/bin/python" "$here/pika_tutorials.py" ;;
    amqplib) run_suite amqplib node "$here/amqplib_tutorials.js" ;;
    http)
      if ! v2="$("$here/setup_tools.sh")"; then
        echo "FAIL http setup: tests/interop/setup_tools.sh failed"
        failed=$((failed + 1))
        continue
      fi
      # A real Prometheus needs a minute of samples for the dashboard's rate()s.
      suite_seconds="${INTEROP_HTTP_SECONDS:-300}" RABBITMQADMIN_V2="$v2" \
        run_suite http "$here/.venv/bin/python" "$here/http_tools.py"
      ;;
    ui)
      if ! "$here/setup_browser.sh"; then
        echo "FAIL ui setup: tests/interop/setup_browser.sh failed"
        failed=$((failed + 1))
        continue
      fi
      run_suite ui "$here/.venv/bin/python" "$here/ui_browser.py"
      ;;
    tls)
      if ! v2="$("$here/setup_tools.sh")"; then
        echo "FAIL tls setup: tests/interop/setup_tools.sh failed"
        failed=$((failed + 1))
        continue
      fi
      RABBITMQADMIN_V2="$v2" run_suite tls "$here/.venv/bin/python" "$here/tls_interop.py"
      ;;
    *)
      echo "FAIL $suite: no such suite (pika, amqplib, http, ui, tls)"
      failed=$((failed + 1))
      ;;
  esac
done

echo "$passed passed, $failed failed"
[[ $failed -eq 0 && $passed -gt 0 ]]
