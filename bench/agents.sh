#!/usr/bin/env bash
# Supervision cost: admission plus spawn latency of `POST /v1/agents` (ledger decision,
# cgroup creation and limits, fork/exec into the cgroup, the durable write; not the
# program's own start-up: the agents are `sleep`), then the daemon's CPU while it supervises
# N idle agents (monitor included: each agent is read every second from its cgroup).
#
#   bash bench/agents.sh [N] [IDLE_SECONDS]      (defaults 1000, 60)
#
# Needs: a release build (cargo build --release -p qm), curl, root for cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
idle=${2:-60}
qm=target/release/qm
[ -x "$qm" ] || { echo "build first: cargo build --release -p qm" >&2; exit 2; }
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
port=17373
cleanup() {
  kill "$qm_pid" 2>/dev/null || true
  cat /sys/fs/cgroup/pids/qm-bench/*/cgroup.procs /sys/fs/cgroup/qm-bench/*/cgroup.procs 2>/dev/null \
    | xargs -r kill 2>/dev/null || true
  sleep 1
  for c in /sys/fs/cgroup/*/qm-bench; do
    for g in "$c"/*/; do rmdir "$g" 2>/dev/null || true; done
    rmdir "$c" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 || true
printf "[agents]\ncgroup_parent = \"qm-bench\"\n${QM_BENCH_EXTRA:-}" > "$work/qm.toml"
"$qm" serve --listen 127.0.0.1:$port --data-dir "$work/data" --config "$work/qm.toml" \
  --capacity cpu=100000,memory=100000Gi > "$work/out" 2> "$work/err" &
qm_pid=$!
sleep 2
# every request carries the admin token the daemon wrote (curl reads $CURL_HOME/.curlrc)
printf 'header = "Authorization: Bearer %s"\n' "$(cat "$work/data/admin.token")" > "$work/.curlrc"
export CURL_HOME="$work"
echo "== spawning $n agents, one request at a time"
for i in $(seq "$n"); do
  curl -s -o /dev/null -w '%{time_total}\n' -X POST -H 'content-type: application/json' \
    "http://127.0.0.1:$port/v1/agents" \
    -d "{\"name\":\"idle-$i\",\"command\":[\"sleep\",\"3600\"],\"resources\":{\"cpu\":\"1m\",\"memory\":\"1Mi\"},\"restart\":\"never\"}" \
    >> "$work/lat"
done
sort -n "$work/lat" | awk '{ v[NR] = $1 } END {
  printf "admission + spawn (HTTP round trip, durable): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms over %d\n",
    1000 * v[int(NR * 0.5)], 1000 * v[int(NR * 0.9)], 1000 * v[int(NR * 0.99)], 1000 * v[NR], NR }'
running=$(curl -s "http://127.0.0.1:$port/v1/agents" | grep -o '"state":"running"' | wc -l)
echo "running agents: $running"
sleep 5
echo "== idle for ${idle}s with $running agents"
t0=$(awk '{ print $14 + $15 }' /proc/$qm_pid/stat)
sleep "$idle" &
sleep_pid=$!
if [ -n "${QM_PERF:-}" ]; then timeout 10 perf record -g -o "$QM_PERF" -p $qm_pid -- sleep 8 >/dev/null 2>&1 || true; fi
wait $sleep_pid
t1=$(awk '{ print $14 + $15 }' /proc/$qm_pid/stat)
awk -v t=$((t1 - t0)) -v hz="$tick" -v s="$idle" -v rss="$(awk '/^VmRSS/ { print $2 }' /proc/$qm_pid/status)" 'BEGIN {
  printf "daemon: %.2f CPU s in %d s = %.2f%% of a core, RSS %.1f MiB\n", t / hz, s, 100 * t / hz / s, rss / 1024 }'
curl -s "http://127.0.0.1:$port/v1/metrics?name=qm_monitor_collection" \
  | grep -o '"collection_ms":[0-9.]*,"collection_cpu_ms":[0-9.]*' \
  | sed 's/^/monitor, last collection of host and agents: /'
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
