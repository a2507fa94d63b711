#!/usr/bin/env bash
# `make test-all`: the fast tier, then the slow tier, sharing one cache of
# decoded datasets and compiled programs; then each tier's wall time and
# per-file totals against the budgets (scripts/test_times.py, a report).
# Usage: scripts/test_tiers.sh PYTHON [PYTEST ARGS...]
set -uo pipefail
PY="$1"; shift
OUT=runs/tests
mkdir -p "$OUT"
KDJAX_CACHE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/kdjax-test-cache-XXXXXX")"
export KDJAX_CACHE_DIR
trap 'rm -rf "$KDJAX_CACHE_DIR"' EXIT

start=$(date +%s)
"$PY" -m pytest "$@" -m 'not slow' --junitxml="$OUT/fast.xml" tests
fast_rc=$?
middle=$(date +%s)
"$PY" -m pytest "$@" -m slow --junitxml="$OUT/slow.xml" tests
slow_rc=$?
end=$(date +%s)

echo "fast tier: $((middle - start)) s wall (exit $fast_rc); slow tier: $((end - middle)) s wall (exit $slow_rc); both: $((end - start)) s"
"$PY" scripts/test_times.py fast="$OUT/fast.xml" slow="$OUT/slow.xml" \
  --wall fast=$((middle - start)) --wall slow=$((end - middle))
[ "$fast_rc" = 0 ] && [ "$slow_rc" = 0 ]
