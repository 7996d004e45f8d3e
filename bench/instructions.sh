#!/usr/bin/env bash
# Instruction counts of the micro-benchmarks (crates/*/benches), measured with callgrind: a
# number that can be compared between commits on a noisy shared machine, unlike wall time.
# See docs/microbenchmarks.md.
#
#   bench/instructions.sh [--compare REV] [--filter TEXT] [--scale N]
#
# Each case runs twice under `valgrind --tool=callgrind`, with K and 2K iterations (K is the
# case's own iteration count divided by --scale, default 10, at least 1); instructions per
# iteration = (Ir(2K) - Ir(K)) / K, so setup, fixtures and process start-up cancel out.
#
# --compare REV also builds and measures REV (any git revision) in a temporary worktree and
# prints both columns with the change. If REV predates the benchmarks, the current ones are
# copied in (a crate whose API no longer fits them is reported as not built).
# --filter TEXT keeps the cases whose `group/case` name contains TEXT.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compare=""
filter=""
scale=10
while [ $# -gt 0 ]; do
  case "$1" in
    --compare) compare="${2:?--compare needs a revision}"; shift 2 ;;
    --filter) filter="${2:?--filter needs a text}"; shift 2 ;;
    --scale) scale="${2:?--scale needs a number}"; shift 2 ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v valgrind >/dev/null; then
  echo "valgrind is not installed (apt-get install valgrind)" >&2
  exit 1
fi

# crate:bench-target pairs; one cargo build per crate keeps a crate that fails on REV from
# hiding the others.
benches=("warren-codec:codec" "warren-broker:routing" "warren-store:store")
target_dir="${CARGO_TARGET_DIR:-$root/target}"
# REV gets a target dir of its own (kept, so its dependencies are built once): cargo gives a
# workspace crate the same artifact name whatever its checkout's path, so REV's build would
# overwrite the working tree's, and cargo could then take REV's binary as up to date.
rev_target_dir="$target_dir/compare-rev"
work="$(mktemp -d)"
worktree=""
cleanup() {
  if [ -n "$worktree" ]; then
    git -C "$root" worktree remove --force "$worktree" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# build DIR OUT TARGET: builds the bench targets of the workspace in DIR into the target dir
# TARGET; writes `name path` lines.
build() {
  local dir="$1" out="$2" target="$3" pair crate name
  : >"$out"
  for pair in "${benches[@]}"; do
    crate="${pair%%:*}"
    name="${pair##*:}"
    echo "building $name ($crate) in $dir" >&2
    if ! (cd "$dir" && CARGO_TARGET_DIR="$target" cargo bench --no-run \
      --message-format=json -p "$crate" --bench "$name" 2>"$work/build-$name.log") \
      | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["name"] == name and "bench" in m["target"]["kind"]):
        print(name, m["executable"])
' "$name" >>"$out"; then
      echo "  $name did not build; its cases are left out (log: last lines below)" >&2
      tail -n 15 "$work/build-$name.log" >&2 || true
    fi
  done
}

# ir BIN ITERS CASE: total instructions (all threads) of one run.
ir() {
  local f="$work/callgrind.out"
  rm -f "$f"
  valgrind --tool=callgrind --quiet --callgrind-out-file="$f" \
    "$1" --bench --exact --iters "$2" "$3" >/dev/null 2>"$work/valgrind.log" || {
    echo "  $3 failed under valgrind:" >&2
    tail -n 20 "$work/valgrind.log" >&2
    return 1
  }
  awk '/^summary:/ { print $2; exit }' "$f"
}

# measure BINARIES OUT: writes `group/case instructions-per-iteration` lines.
measure() {
  local bins="$1" out="$2" group bin case n k a b
  : >"$out"
  while read -r group bin; do
    while read -r case n; do
      [ -n "$case" ] || continue
      if [ -n "$filter" ] && [[ "$group/$case" != *"$filter"* ]]; then
        continue
      fi
      k=$(( n / scale ))
      [ "$k" -ge 1 ] || k=1
      echo "  $group/$case: $k and $((2 * k)) iterations" >&2
      a="$(ir "$bin" "$k" "$case")" || continue
      b="$(ir "$bin" "$((2 * k))" "$case")" || continue
      python3 -c 'import sys; print(sys.argv[1], (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4]))' \
        "$group/$case" "$a" "$b" "$k" >>"$out"
    done < <("$bin" --list)
  done <"$bins"
}

# Copies the current benchmarks into a checkout that has none.
overlay() {
  local dir="$1" pair crate name toml
  [ -f "$dir/bench/harness.rs" ] || { mkdir -p "$dir/bench"; cp "$root/bench/harness.rs" "$dir/bench/"; }
  for pair in "${benches[@]}"; do
    crate="${pair%%:*}"
    name="${pair##*:}"
    toml="$dir/crates/$crate/Cargo.toml"
    if [ ! -f "$dir/crates/$crate/benches/$name.rs" ]; then
      mkdir -p "$dir/crates/$crate/benches"
      cp "$root/crates/$crate/benches/$name.rs" "$dir/crates/$crate/benches/"
    fi
    if ! grep -q "name = \"$name\"" "$toml"; then
      printf '\n[[bench]]\nname = "%s"\nharness = false\n' "$name" >>"$toml"
    fi
  done
}

if [ -n "$compare" ]; then
  rev="$(git -C "$root" rev-parse --verify "$compare^{commit}")"
  worktree="$work/rev"
  git -C "$root" worktree add --detach --quiet "$worktree" "$rev"
  if [ ! -f "$worktree/crates/warren-codec/benches/codec.rs" ]; then
    echo "$compare has no micro-benchmarks; measuring it with the current ones" >&2
  fi
  overlay "$worktree"
  build "$worktree" "$work/bins-old" "$rev_target_dir"
  echo "measuring $compare ($(git -C "$root" rev-parse --short "$rev"))" >&2
  measure "$work/bins-old" "$work/old"
fi

build "$root" "$work/bins-new" "$target_dir"
echo "measuring the working tree" >&2
measure "$work/bins-new" "$work/new"

python3 - "$work/new" "${compare:+$work/old}" "$compare" <<'PY'
import sys

def load(path):
    out = {}
    if path:
        for line in open(path):
            name, value = line.split()
            out[name] = float(value)
    return out

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"

new, old, rev = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
names = list(new) + [n for n in old if n not in new]
if rev:
    print(f"| case | {rev} | working tree | change |")
    print("| --- | ---: | ---: | ---: |")
    for n in names:
        a, b = old.get(n), new.get(n)
        change = f"{(b - a) / a * 100:+.1f}%" if a and b is not None else "-"
        print(f"| {n} | {fmt(a)} | {fmt(b)} | {change} |")
else:
    print("| case | instructions/iteration |")
    print("| --- | ---: |")
    for n in names:
        print(f"| {n} | {fmt(new[n])} |")
PY
