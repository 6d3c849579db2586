#!/usr/bin/env bash
# Pressure response, measured from outside: how long after memory crosses the critical
# threshold the victim gets SIGTERM, and who the victim is. The agents (bench/pressure/agent.py)
# time it themselves on CLOCK_MONOTONIC: a leaker notes when the "used" figure first reads at or
# above the threshold, and whoever gets SIGTERM notes when.
#
# 1. Latency in a 1 GiB world (`--capacity memory=1Gi`, qm's managed view): an important agent
#    holds 300 MiB (priority 900, request 400Mi); a low-priority agent leaks 200 MiB/s. qm runs
#    its default collection (host every 1 s, agents every 5 s) with forecast evictions off, so
#    this is the threshold path: the 100 ms memory probe, the urgent collection, the responder.
#    TRIALS leakers, one after another; p50 / p95 / max.
# 2. The same scenario on the host's own memory, quartermaster against Debian's earlyoom, both
#    acting at the same MemAvailable share (earlyoom -m P; qm critical_enter 1 - P/100), set about
#    6 GiB above what the host uses now rather than earlyoom's default 10% (which keeps the
#    machine safe and the run short). The important agent holds the larger share (a model
#    server, say) and the low-priority one leaks 256 MiB/s. Under qm both
#    are agents with priorities; under earlyoom they are plain processes (earlyoom has no notion
#    of priority and kills the largest oom_score). HOST_TRIALS each: qm as configured by default
#    (forecast evictions on), qm threshold-only, earlyoom.
#
#   bash bench/pressure-vs-earlyoom.sh [TRIALS] [HOST_TRIALS]      (defaults 20, 3; 0 skips a part)
#
# Needs: a release build (cargo build --release -p qm), python3, curl, root (cgroups), and
# earlyoom (apt-get install earlyoom) for part 2.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-20}
host_trials=${2:-3}
qm=$PWD/target/release/qm
[ -x "$qm" ] || { echo "build first: cargo build --release -p qm" >&2; exit 2; }
agent=$PWD/bench/pressure/agent.py
py=$(python3 -c 'import sys; print(sys.executable)')
work=$(mktemp -d)
port=17474
parent=qm-bench-pressure
base="http://127.0.0.1:$port"
qm_pid=""
eo_pid=""

kill_group_procs() {
  cat /sys/fs/cgroup/memory/$parent/*/cgroup.procs 2>/dev/null | xargs -r kill -9 2>/dev/null || true
}
cleanup() {
  [ -n "$qm_pid" ] && kill "$qm_pid" 2>/dev/null || true
  [ -n "$eo_pid" ] && kill "$eo_pid" 2>/dev/null || true
  kill_group_procs
  pkill -9 -f "$agent" 2>/dev/null || true
  sleep 1
  for c in /sys/fs/cgroup/*/$parent; do
    for g in "$c"/*/; do rmdir "$g" 2>/dev/null || true; done
    rmdir "$c" 2>/dev/null || true
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

json() { "$py" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

start_qm() { # CONFIG CAPACITY
  printf "%b" "$1" > "$work/qm.toml"
  rm -rf "$work/data"
  "$qm" serve --listen 127.0.0.1:$port --data-dir "$work/data" --config "$work/qm.toml" \
    ${2:+--capacity "$2"} > "$work/out" 2> "$work/err" &
  qm_pid=$!
  for _ in $(seq 100); do
    if grep -q listening "$work/out" 2>/dev/null; then
      # every request carries the admin token the daemon wrote (curl reads $CURL_HOME/.curlrc)
      printf 'header = "Authorization: Bearer %s"\n' "$(cat "$work/data/admin.token")" > "$work/.curlrc"
      export CURL_HOME="$work"
      return
    fi
    sleep 0.1
  done
  echo "qm did not start" >&2; cat "$work/err" >&2; exit 1
}
stop_qm() {
  kill "$qm_pid" 2>/dev/null || true; wait "$qm_pid" 2>/dev/null || true; qm_pid=""
  kill_group_procs; sleep 1
}
spawn() { # NAME PRIORITY REQUEST ARGS...
  local name=$1 prio=$2 req=$3; shift 3
  local cmd
  cmd=$("$py" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$py" "$agent" "$@")
  # admission may still be paused from the last trial: retry for a minute
  for _ in $(seq 120); do
    code=$(curl -s -o "$work/resp" -w '%{http_code}' -X POST -H 'content-type: application/json' "$base/v1/agents" \
      -d "{\"name\":\"$name\",\"command\":$cmd,\"priority\":$prio,\"restart\":\"never\",\"resources\":{\"cpu\":\"100m\",\"memory\":\"$req\"}}")
    case $code in 201|202) return 0 ;; 503) sleep 0.5 ;; *) break ;; esac
  done
  echo "cannot spawn $name: $code $(cat "$work/resp")" >&2
  return 1
}
state() { curl -s "$base/v1/agents/$1" | json 'd.get("state")' 2>/dev/null || true; }
wait_for() { # SECONDS COMMAND... : until the command succeeds
  local t=$1; shift
  for _ in $(seq $((t * 10))); do "$@" && return 0; sleep 0.1; done
  return 1
}
is_state() { [ "$(state "$1")" = "$2" ]; }
admission_open() { [ "$(curl -s "$base/v1/pressure" | json 'd["admission"]')" = open ]; }
field() { grep -o "$2=[^ ]*" "$1" 2>/dev/null | cut -d= -f2 || true; }
stats() { # label file-of-numbers
  sort -n "$2" | awk -v l="$1" '{ v[NR] = $1 } END {
    if (NR == 0) { printf "%s: no samples\n", l; exit }
    i95 = int(NR * 0.95 + 0.999); if (i95 > NR) i95 = NR
    printf "%s: p50 %.0f ms, p95 %.0f ms, max %.0f ms over %d\n", l, v[int((NR + 1) / 2)], v[i95], v[NR], NR }'
}
used_bytes() { awk '/^MemTotal/ { t = $2 } /^MemAvailable/ { a = $2 } END { printf "%.0f\n", (t - a) * 1024 }' /proc/meminfo; }
total_bytes() { awk '/^MemTotal/ { printf "%.0f\n", $2 * 1024 }' /proc/meminfo; }

if [ "$trials" -gt 0 ]; then
  echo "== 1. latency in a 1 GiB world, $trials leaks, threshold only"
  start_qm "[agents]\ncgroup_parent = \"$parent\"\n[alerts]\ndefault_rules = false\n[pressure]\nmin_dwell_s = 1\nforecast_horizon_s = 0\n" "cpu=4,memory=1Gi"
  gib=$((1 << 30))
  threshold=$(awk -v g=$gib 'BEGIN { printf "%d", 0.95 * g }')
  spawn keeper 900 400Mi hold 300 "$work/keeper"
  wait_for 20 is_state keeper running
  sleep 3
  : > "$work/lat1"
  for i in $(seq "$trials"); do
    spawn "leak-$i" 100 64Mi leak 4 0.02 "$threshold" $((gib * 6 / 5)) "cgroup:/sys/fs/cgroup/memory/$parent" "$work/leak-$i" || continue
    if wait_for 30 is_state "leak-$i" evicted; then
      sleep 0.3
      l=$(field "$work/leak-$i" latency_ms)
      [ -n "$l" ] && echo "$l" >> "$work/lat1"
    else
      echo "trial $i: leak-$i not evicted (state $(state "leak-$i"))"
    fi
    wait_for 30 admission_open || echo "trial $i: admission did not reopen"
  done
  stats "crossing to SIGTERM" "$work/lat1"
  echo "qm's own figure (collection that saw critical to SIGTERM), last eviction: $(curl -s "$base/v1/pressure" | json 'd["responder"]["last_eviction"]["response_ms"]') ms"
  echo "keeper: $(state keeper); evictions: $(curl -s "$base/v1/pressure" | json 'd["responder"]')"
  oom=$(curl -s "$base/v1/agents" | json 'sum(1 for a in d["items"] if a.get("oom_killed"))')
  echo "agents killed by the kernel's OOM killer: $oom"
  stop_qm
fi

total=$(total_bytes)
baseline=$(used_bytes)
# act where used memory is about 6 GiB above what the host uses now (this VM backs fresh pages
# lazily, at a few hundred MiB/s, so bigger scenarios only take longer)
pct=$(awk -v b="$baseline" -v t="$total" 'BEGIN { p = int(100 * (b + 6 * 2^30) / t) + 1; print (p > 90 ? 90 : p) }')
host_threshold=$(awk -v t="$total" -v p="$pct" 'BEGIN { printf "%.0f", t * p / 100 }')
host_cap=$(awk -v t="$total" -v p="$pct" 'BEGIN { printf "%.0f", t * (p + 5) / 100 }')
hold_mib=$(( (host_threshold - baseline) * 6 / 10 / 1048576 ))
warn=$(awk -v p="$pct" 'BEGIN { printf "%.2f", p / 100 - 0.1 }')
echo
echo "== 2. the host's memory: act when MemAvailable falls to $((100 - pct))% (used $pct%); the important agent holds $hold_mib MiB, the other leaks 256 MiB/s"
host_qm() { # LABEL EXTRA-PRESSURE-CONFIG
  start_qm "[agents]\ncgroup_parent = \"$parent\"\n[alerts]\ndefault_rules = false\n[pressure]\nwarning_enter = $warn\nwarning_leave = $(awk -v w="$warn" 'BEGIN { print w - 0.05 }')\ncritical_enter = $(awk -v p="$pct" 'BEGIN { print p / 100 }')\ncritical_leave = $(awk -v p="$pct" 'BEGIN { print p / 100 - 0.03 }')\nmin_dwell_s = 1\n$2" ""
  : > "$work/lat-$1"
  for i in $(seq "$host_trials"); do
    spawn "important-$i" 900 "${hold_mib}Mi" hold "$hold_mib" "$work/imp-$1-$i" || continue
    wait_for 30 is_state "important-$i" running
    wait_for 120 grep -q running "$work/imp-$1-$i"
    spawn "leaky-$i" 100 64Mi leak 16 0.06 "$host_threshold" "$host_cap" host "$work/leaky-$1-$i" || continue
    wait_for 60 is_state "leaky-$i" evicted || wait_for 1 is_state "important-$i" evicted || true
    sleep 0.5
    victim=none
    is_state "important-$i" evicted && victim="important (priority 900)"
    is_state "leaky-$i" evicted && victim="leaker (priority 100)"
    l=$(field "$work/leaky-$1-$i" latency_ms)
    if [ -n "$l" ]; then echo "$l" >> "$work/lat-$1"; else l="(before the crossing)"; fi
    echo "  qm $1, trial $i: evicted $victim; SIGTERM $l ms after the crossing; leaker at $(field "$work/leaky-$1-$i" size_mib) MiB"
    curl -s -o /dev/null -X DELETE "$base/v1/agents/important-$i?grace_s=1"
    curl -s -o /dev/null -X DELETE "$base/v1/agents/leaky-$i?grace_s=1"
    wait_for 20 admission_open || true
    sleep 2
  done
  stop_qm
}
host_qm default ""
host_qm threshold-only "forecast_horizon_s = 0\n"
stats "qm threshold-only, crossing to SIGTERM" "$work/lat-threshold-only"

if command -v earlyoom > /dev/null; then
  earlyoom -m $((100 - pct)) -r 0 > "$work/earlyoom.log" 2>&1 &
  eo_pid=$!
  sleep 1
  : > "$work/lat-eo"
  for i in $(seq "$host_trials"); do
    "$py" "$agent" hold "$hold_mib" "$work/imp-eo-$i" &
    imp=$!
    wait_for 120 grep -q running "$work/imp-eo-$i"
    "$py" "$agent" leak 16 0.06 "$host_threshold" "$host_cap" host "$work/leaky-eo-$i" &
    leak=$!
    wait_for 60 grep -q sigterm "$work/imp-eo-$i" "$work/leaky-eo-$i" || true
    sleep 0.5
    victim=none; l=""
    crossed=$(field "$work/leaky-eo-$i" crossed_at)
    for who in imp leaky; do
      if grep -q sigterm "$work/$who-eo-$i"; then
        [ $who = imp ] && victim="important (the larger process)" || victim="leaker"
        term=$(field "$work/$who-eo-$i" sigterm_at)
        [ -n "$crossed" ] && l=$(awk -v a="$crossed" -v b="$term" 'BEGIN { printf "%.1f", (b - a) * 1000 }')
        break
      fi
    done
    echo "  earlyoom, trial $i: killed $victim; SIGTERM ${l:-?} ms after the crossing"
    [ -n "${l:-}" ] && echo "$l" >> "$work/lat-eo"
    kill -9 $imp $leak 2>/dev/null || true
    wait $imp $leak 2>/dev/null || true
    sleep 3
  done
  kill "$eo_pid" 2>/dev/null || true; eo_pid=""
  stats "earlyoom, crossing to SIGTERM" "$work/lat-eo"
else
  echo "earlyoom is not installed: apt-get install earlyoom"
fi
