#!/usr/bin/env bash
# Installs the operators' tools the `http` interop suite drives; idempotent.
#   rabbitmqadmin (classic, Python) -> Debian's rabbitmq-server package (its service is not
#                                      started: policy-rc.d refuses it during the install)
#   promtool, prometheus            -> Debian's prometheus package (same)
#   openssl (the tls suite's certificates) -> Debian's openssl package
#   rabbitmqadmin v2 (Rust)         -> cargo install, cached in $WARREN_TOOLS (default
#                                      ~/.cache/warren-tools); printed on stdout as its path
set -euo pipefail

log() { printf 'setup-tools: %s\n' "$*" >&2; }
tools="${WARREN_TOOLS:-$HOME/.cache/warren-tools}"
RABBITMQADMIN_V2_VERSION="2.35.0"

missing=()
command -v rabbitmqadmin >/dev/null || missing+=(rabbitmq-server)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]} (Debian packages)"
  # Do not let the packages start their services (a RabbitMQ on 5672, a Prometheus on 9090).
  policy=/usr/sbin/policy-rc.d
  restore=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && restore=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  [[ -n $restore ]] && rm -f "$policy"
fi

v2="$tools/bin/rabbitmqadmin"
if [[ ! -x $v2 ]] || ! "$v2" --version 2>/dev/null | grep -q "$RABBITMQADMIN_V2_VERSION"; then
  log "building rabbitmqadmin $RABBITMQADMIN_V2_VERSION into $tools (cached for later runs)"
  cargo install --quiet --locked --version "$RABBITMQADMIN_V2_VERSION" --root "$tools" rabbitmqadmin >&2
fi
echo "$v2"
