#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a while, seeded with the committed
# corpus (fuzz/corpus/<target>, copied: the run does not rewrite it). A crash fails the run and
# leaves its input in fuzz/artifacts/<target>/ (add it to the corpus once fixed, so that
# `cargo test -p warren-fuzz` replays it for good).
#
#   scripts/fuzz.sh [--seconds N] [--jobs N] [target ...]      (default: 20 s, all targets)
#
# Installs cargo-fuzz on first use (cached in $WARREN_TOOLS, default ~/.cache/warren-tools).
# Stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z sanitizer flags.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=20
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
tools="${WARREN_TOOLS:-$HOME/.cache/warren-tools}"
CARGO_FUZZ_VERSION="0.13.2"
fuzz="$tools/bin/cargo-fuzz"
if [[ ! -x $fuzz ]] || ! "$fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools (cached)" >&2
  cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" --root "$tools" cargo-fuzz >&2
fi
export RUSTC_BOOTSTRAP=1
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$fuzz" build --fuzz-dir fuzz >&2
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  cp fuzz/corpus/"$t"/* "$work/$t"/
  if "$fuzz" run --fuzz-dir fuzz "$t" "$work/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
      >"$work/$t.log" 2>&1; then
    echo "PASS fuzz $t ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$t.log" | grep -o '[0-9]*' || echo '?') runs in ${seconds}s)"
  else
    echo "FAIL fuzz $t: see fuzz/artifacts/$t/; its log ends:"
    tail -30 "$work/$t.log"
    failed=1
  fi
done
exit "$failed"
