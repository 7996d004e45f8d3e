#!/usr/bin/env bash
# Installs what the interop suites need, from PyPI and npm only; idempotent.
#   pika     -> tests/interop/.venv            (python3 -m venv; else pip install --target)
#   selenium -> the same venv (the ui suite; its browser comes from setup_browser.sh)
#   amqplib  -> tests/interop/node/node_modules (npm ci against the committed lockfile)
# All are git-ignored. Re-running is a no-op once the pinned versions are in place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
node_dir="$here/node"
PIKA_VERSION="1.3.2"
SELENIUM_VERSION="4.51.0"

log() { printf 'setup: %s\n' "$*" >&2; }

# Two runs starting side by side must not install over each other.
if command -v flock >/dev/null 2>&1; then
  lock="${TMPDIR:-/tmp}/warren-interop-setup.$(id -u).$(printf '%s' "$here" | cksum | cut -d' ' -f1).lock"
  exec 9>"$lock"
  flock -w 600 9 || { log "could not take $lock"; exit 1; }
fi

pika_ok() {
  [[ -x "$venv/bin/python" ]] &&
    "$venv/bin/python" -c 'import sys, pika; sys.exit(pika.__version__ != sys.argv[1])' \
      "$PIKA_VERSION" >/dev/null 2>&1
}

install_pika() {
  log "installing pika==$PIKA_VERSION into $venv"
  rm -rf "$venv"
  if python3 -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pika==$PIKA_VERSION"
    return
  fi
  # No usable venv module (Debian without python3-venv): install into a target directory
  # and put a wrapper where the venv's interpreter would be, so run.sh need not care.
  log "python3 -m venv is unavailable; falling back to pip install --target"
  rm -rf "$venv"
  mkdir -p "$venv/bin"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --target "$venv/site-packages" "pika==$PIKA_VERSION"
  local python3_path
  python3_path="$(command -v python3)"
  cat >"$venv/bin/python" <<WRAPPER
#!/bin/sh
# Written by setup.sh: python3 with the pip --target directory on its path.
PYTHONPATH="$venv/site-packages\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python3_path" "\$@"
WRAPPER
  chmod +x "$venv/bin/python"
}

selenium_ok() {
  [[ -x "$venv/bin/python" ]] &&
    "$venv/bin/python" -c 'import sys, selenium; sys.exit(selenium.__version__ != sys.argv[1])' \
      "$SELENIUM_VERSION" >/dev/null 2>&1
}

install_selenium() {
  log "installing selenium==$SELENIUM_VERSION into $venv"
  if [[ -d "$venv/site-packages" ]]; then
    # The pip --target fallback that install_pika made (no venv module).
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --upgrade \
      --target "$venv/site-packages" "selenium==$SELENIUM_VERSION"
  else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "selenium==$SELENIUM_VERSION"
  fi
}

wanted_amqplib() {
  node -p 'require(process.argv[1]).dependencies.amqplib' "$node_dir/package.json"
}

installed_amqplib() {
  node -p 'require(process.argv[1]).version' "$node_dir/node_modules/amqplib/package.json" 2>/dev/null || true
}

install_amqplib() {
  log "installing amqplib $(wanted_amqplib) into $node_dir/node_modules"
  local npm_flags=(--no-audit --no-fund --loglevel=error)
  if [[ -f "$node_dir/package-lock.json" ]]; then
    (cd "$node_dir" && npm ci "${npm_flags[@]}" >/dev/null)
  else
    (cd "$node_dir" && npm install --omit-lockfile-registry-resolved "${npm_flags[@]}" >/dev/null)
  fi
}

command -v python3 >/dev/null || { log "python3 is required"; exit 1; }
command -v node >/dev/null || { log "node is required"; exit 1; }
command -v npm >/dev/null || { log "npm is required"; exit 1; }

pika_ok || install_pika
pika_ok || { log "pika==$PIKA_VERSION is still not importable from $venv"; exit 1; }

selenium_ok || install_selenium
selenium_ok || { log "selenium==$SELENIUM_VERSION is still not importable from $venv"; exit 1; }

[[ "$(installed_amqplib)" == "$(wanted_amqplib)" ]] || install_amqplib
[[ "$(installed_amqplib)" == "$(wanted_amqplib)" ]] ||
  { log "amqplib $(wanted_amqplib) is still not in $node_dir/node_modules"; exit 1; }
