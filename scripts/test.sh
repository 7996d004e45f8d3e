#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests (with the fuzz corpus replayed), a
# short run of each fuzz target (cargo-fuzz, installed and cached on first use), then the
# pika and amqplib tutorial
# suites, the operators' tools against the management API and metrics (rabbitmqadmin classic
# and v2, promtool, a real Prometheus), the web UI in headless Chromium (Selenium), TLS (pika,
# amqplib and rabbitmqadmin against a second warren with AMQPS and HTTPS), and a short
# warren-perf run against a freshly started `warren`. Installs what the suites need on
# first use (pika and selenium from PyPI, amqplib from npm, Debian's rabbitmq-server and
# prometheus packages for their tools, Debian's chromium and chromium-driver for the UI,
# rabbitmqadmin v2 with cargo install, cached in ~/.cache/warren-tools).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo test"
cargo test --workspace --all-targets

echo "== fuzzing: every target for a few seconds from the committed corpus (scripts/fuzz.sh)"
scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-10}"

echo "== building warren and warren-perf"
cargo build --workspace --bins

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
mgmt_port="$(free_port)"
metrics_port="$(free_port)"
data="$(mktemp -d)"
log="$data/warren.log"
target/debug/warren --amqp-listen "127.0.0.1:$port" --management-listen "127.0.0.1:$mgmt_port" \
  --prometheus-listen "127.0.0.1:$metrics_port" --data-dir "$data/data" 2>"$log" &
warren_pid=$!
cleanup() {
  kill "$warren_pid" 2>/dev/null || true
  wait "$warren_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

url="amqp://guest:guest@127.0.0.1:$port/%2F"

echo "== warren-perf smoke run"
perf_json="$(target/debug/warren-perf --uri "$url" -z 2 -c 100 -q 100 --json)"
echo "$perf_json"
python3 - "$perf_json" <<'PY'
import json, sys
r = json.loads(sys.argv[1].strip().splitlines()[-1])
assert r["sent"] > 0 and r["received"] > 0, r
PY
# Large bodies take the generator's other path (written from their templates, vectored).
perf_json="$(target/debug/warren-perf --uri "$url" -z 1 -s 65536 -c 50 -q 50 --json)"
python3 - "$perf_json" <<'PY'
import json, sys
r = json.loads(sys.argv[1].strip().splitlines()[-1])
assert r["sent"] > 0 and r["received"] > 0 and r["confirmed"] > 0, r
PY

echo "== interop suites (pika, amqplib; rabbitmqadmin, promtool, Prometheus; the web UI; TLS)"
AMQP_URL="$url" MGMT_URL="http://127.0.0.1:$mgmt_port" METRICS_URL="http://127.0.0.1:$metrics_port" \
  INTEROP_WARREN_BIN="$PWD/target/debug/warren" tests/interop/run.sh pika amqplib http ui tls

echo "== clean shutdown on SIGTERM"
kill -TERM "$warren_pid"
if ! wait "$warren_pid"; then
  echo "warren did not exit cleanly on SIGTERM; its log:"
  cat "$log"
  exit 1
fi
