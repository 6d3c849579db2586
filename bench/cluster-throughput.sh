#!/usr/bin/env bash
# Durable allocations through the cluster, end to end: `qm bench` (HTTP, 64 clients, grant then
# release: two durable writes each) against a daemon that is the leader of a one-member cluster on a real etcd
# (`--etcd`: every batch an entry of the cluster's log, fenced), and the same against a daemon
# on its own (SQLite), for comparison. etcd, both daemons and the load generator share this
# machine.
#
#   bash bench/cluster-throughput.sh [SECONDS] [CLIENTS]      (defaults 10 and 64)
#   GRANTS_ONLY=1 bash bench/cluster-throughput.sh            (grants, none released)
#
# Needs: etcd (Debian etcd-server) and a release build (cargo build --release -p qm).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
clients=${2:-64}
qm=$PWD/target/release/qm
[ -x "$qm" ] || { echo "build first: cargo build --release -p qm" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd is not installed (Debian: etcd-server)" >&2; exit 2; }
tmp=$(mktemp -d /tmp/qm-cluster-bench.XXXXXX)
# every process started, one pid a line (a file: `serve` runs in a subshell)
: >"$tmp/pids"
cleanup() {
  while read -r p; do kill "$p" 2>/dev/null || true; done <"$tmp/pids"
  sleep 1
  for g in /sys/fs/cgroup/*/qm-bench-cluster-* ; do rmdir "$g" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cport=$(free_port); pport=$(free_port)
etcd --name e1 --data-dir "$tmp/etcd" \
  --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "e1=http://127.0.0.1:$pport" >"$tmp/etcd.log" 2>&1 &
echo $! >>"$tmp/pids"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$cport/health" >/dev/null 2>&1 && break; sleep 0.1; done

serve() { # name data-dir extra-flags... ; prints the address
  local name=$1 dir=$2; shift 2
  mkdir -p "$dir"
  printf '[agents]\ncgroup_parent = "qm-bench-cluster-%s"\n' "$name" >"$dir/qm.toml"
  "$qm" serve --config "$dir/qm.toml" --data-dir "$dir/data" --listen 127.0.0.1:0 \
    --node-name "$name" --capacity cpu=100000,memory=1024Ti "$@" >"$dir/out" 2>"$dir/log" &
  echo $! >>"$tmp/pids"
  for _ in $(seq 100); do grep -q "listening on" "$dir/out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/^listening on //p' "$dir/out"
}

run() { # label address token
  local label=$1 addr=$2 token=$3
  # the leader takes writes once it holds the log
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$addr/v1/allocations?dry_run=true" \
      -H "Authorization: Bearer $token" -H 'content-type: application/json' \
      -d '{"agent":"probe","resources":{"cpu":"1m"}}')
    [ "$code" = 201 ] && curl -s -o /dev/null -w '' -X POST "http://$addr/v1/allocations" \
      -H "Authorization: Bearer $token" -H 'content-type: application/json' \
      -d '{"agent":"warm","resources":{"cpu":"1m"}}' && break
    sleep 0.2
  done
  echo "== $label"
  local release=(--release)
  [ "${GRANTS_ONLY:-0}" = 1 ] && release=()
  "$qm" bench --server "http://$addr" --token "$token" -c "$clients" -d "$seconds" "${release[@]}"
}

addr=$(serve member "$tmp/member" --etcd "http://127.0.0.1:$cport")
sleep 3  # elected, caught up
run "one-member cluster on etcd (every batch an etcd transaction, fenced)" "$addr" "$(cat "$tmp/member/data/admin.token")"
addr=$(serve alone "$tmp/alone")
run "a daemon on its own (SQLite)" "$addr" "$(cat "$tmp/alone/data/admin.token")"
