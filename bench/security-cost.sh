#!/usr/bin/env bash
# What security costs `qm bench` (durable allocations per second, each released, 64 clients):
#   tokens    this build as shipped: bearer token checked on every request, authorization,
#             an audit entry in each write's own transaction;
#   none      this build with --auth none (no token lookup; the gate and the audit still run);
#   baseline  a build from before security (no gate, no audit), when its binary is given.
# Rounds alternate the variants so drift on the machine hits them alike; each prints its line.
#
#   bash bench/security-cost.sh [DURATION_S] [ROUNDS] [BASELINE_QM]   (defaults 10, 3, none)
#   QM_BENCH_FLAGS="" bash bench/security-cost.sh ...    grants only, none released
#
# Needs: a release build (cargo build --release -p qm). For a baseline binary:
#   git worktree add /tmp/qm-base 09c7804 && (cd /tmp/qm-base && cargo build --release -p qm)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
base=${3:-}
flags=${QM_BENCH_FLAGS---release}
qm=target/release/qm
[ -x "$qm" ] || { echo "build first: cargo build --release -p qm" >&2; exit 2; }
work=$(mktemp -d)
port=17474
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 65536 || true
run() { # NAME BINARY [SERVE FLAGS...]
  local name=$1 bin=$2; shift 2
  rm -rf "$work/data"
  "$bin" serve --listen 127.0.0.1:$port --data-dir "$work/data" --node-name bench \
    --capacity cpu=100000000,memory=100000000Gi "$@" > "$work/out" 2> "$work/err" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
  local token=()
  [ "$name" = tokens ] && token=(--token "$(cat "$work/data/admin.token")")
  local line
  # shellcheck disable=SC2086
  line=$(env -u QM_TOKEN "$qm" --server http://127.0.0.1:$port "${token[@]}" bench -c 64 \
    -d "$secs" $flags 2>/dev/null | head -1)
  if [ "$name" = tokens ]; then
    local rows
    rows=$(sqlite3 "$work/data/qm.db" 'SELECT count(*) FROM audit' 2>/dev/null || echo '?')
    line="$line; audit rows $rows"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  printf '%-9s %s\n' "$name" "$line"
}
echo "== $rounds rounds of ${secs}s, 64 clients, qm bench ${flags:-(grants only)}"
for r in $(seq "$rounds"); do
  run tokens "$qm"
  run none "$qm" --auth none
  [ -n "$base" ] && run baseline "$base"
done
