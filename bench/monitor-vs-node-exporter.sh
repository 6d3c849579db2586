#!/usr/bin/env bash
# Monitoring cost, side by side: `qm serve` (collecting host metrics every second on its own)
# against Debian's prometheus-node-exporter (collecting when scraped), both scraped once a
# second for the same time. Prints, for each: CPU seconds used, CPU per scrape, share of a
# core, RSS, and the size and latency of one scrape. Also qm's idle cost with no scrapes.
#
#   bash bench/monitor-vs-node-exporter.sh [SECONDS]      (default 60)
#
# Needs: a release build (cargo build --release -p qm), curl, and the Debian package
# prometheus-node-exporter (apt-get install prometheus-node-exporter).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
qm=target/release/qm
exporter=$(command -v prometheus-node-exporter || command -v node_exporter || true)
[ -x "$qm" ] || { echo "build first: cargo build --release -p qm" >&2; exit 2; }
[ -n "$exporter" ] || { echo "install prometheus-node-exporter" >&2; exit 2; }
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'kill $qm_pid $ne_pid 2>/dev/null || true; rm -rf "$work"' EXIT

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# /metrics without a token, as node-exporter serves it
printf '[monitor]\ninterval_s = 1\n[auth]\npublic_metrics = true\n' > "$work/qm.toml"
"$qm" serve --listen 127.0.0.1:17070 --data-dir "$work/data" --config "$work/qm.toml" \
  > "$work/qm.out" 2> "$work/qm.err" &
qm_pid=$!
"$exporter" --web.listen-address=127.0.0.1:19100 > "$work/ne.out" 2>&1 &
ne_pid=$!
sleep 5

echo "== idle: qm serve for ${secs}s with no scrapes (host collection every 1 s)"
q0=$(cpu_ticks $qm_pid)
sleep "$secs"
q1=$(cpu_ticks $qm_pid)
awk -v t=$((q1 - q0)) -v hz="$tick" -v s="$secs" -v rss="$(rss_kib $qm_pid)" 'BEGIN {
  printf "qm idle: %.2f CPU s in %d s = %.3f%% of a core, RSS %.1f MiB\n", t / hz, s, 100 * t / hz / s, rss / 1024 }'

echo "== scraped once a second for ${secs}s"
q0=$(cpu_ticks $qm_pid); n0=$(cpu_ticks $ne_pid)
qt=0; nt=0
for _ in $(seq "$secs"); do
  a=$(curl -s -o "$work/qm.prom" -w '%{time_total}' http://127.0.0.1:17070/metrics)
  b=$(curl -s -o "$work/ne.prom" -w '%{time_total}' http://127.0.0.1:19100/metrics)
  qt=$(awk -v x="$qt" -v y="$a" 'BEGIN { print x + y }')
  nt=$(awk -v x="$nt" -v y="$b" 'BEGIN { print x + y }')
  sleep 1
done
q1=$(cpu_ticks $qm_pid); n1=$(cpu_ticks $ne_pid)
for who in qm ne; do
  if [ $who = qm ]; then t=$((q1 - q0)); pid=$qm_pid; lat=$qt; name="qm serve"; else t=$((n1 - n0)); pid=$ne_pid; lat=$nt; name="node-exporter"; fi
  awk -v name="$name" -v t=$t -v hz="$tick" -v s="$secs" -v rss="$(rss_kib $pid)" -v lat="$lat" \
      -v bytes="$(wc -c < "$work/$who.prom")" -v series="$(grep -vc '^#' "$work/$who.prom")" 'BEGIN {
    printf "%-14s CPU %.2f s (%.1f ms per scrape, %.3f%% of a core), RSS %.1f MiB, scrape %.2f ms avg, %d bytes, %d samples\n",
      name, t / hz, 1000 * t / hz / s, 100 * t / hz / s, rss / 1024, 1000 * lat / s, bytes, series }'
done
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
