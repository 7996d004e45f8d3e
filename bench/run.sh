#!/usr/bin/env bash
# Side-by-side benchmark of Warren and RabbitMQ; see docs/benchmarks.md.
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/run.py" "$@"
