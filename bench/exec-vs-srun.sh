#!/usr/bin/env bash
# Launch overhead: `qm exec` against Slurm's `srun`, on one machine, for a command that does
# nothing. Both are the "ask the resource manager for an allocation, run CMD in it, give it
# back" path, measured end to end from the caller's side:
#
#   srun      srun -n1 --mem=64M true                         (single-node Slurm on localhost)
#   qm exec   qm exec --cpu 100m --memory 64Mi -- true        (qm serve on 127.0.0.1)
#   true      true                                            (the floor: fork + exec + wait)
#   srun --version, qm --version                              (each client's own start-up cost)
#   curl      POST /v1/allocations + DELETE, by two curls + jq (an admission as a script sees it)
#
# and, outside hyperfine, one admission (POST, then POST+DELETE) over a kept-alive connection,
# timed in-process by python's http.client: the daemon's cost without any process start-up.
#
# Slurm is the minimal single-node setup: slurmctld + slurmd + munged on this host, every file
# (slurm.conf, state, spool, logs, munge socket) in a temp dir, slurm.conf passed by -f and
# SLURM_CONF, so /etc/slurm is left alone. select/cons_tres with CR_Core_Memory (the --mem is a
# consumable), and by default proctrack/linuxproc + task/none: Slurm tracks the step's processes
# but confines nothing, whereas qm exec puts the command in a cgroup with the allocation's
# limits. SLURM_CGROUP=1 uses proctrack/cgroup + task/cgroup instead (cgroup v1 here), which
# is the like-for-like setting.
#
#   bash bench/exec-vs-srun.sh [RUNS] [WARMUP]        (defaults 50, 5)
#
# Environment: OUT=dir for the results (hyperfine JSON/markdown, http.json; default
# /tmp/qm-exec-vs-srun-<time>), HTTP_RUNS (default 1000), SLURM_CGROUP=1 (above), KEEP=1 keeps
# the temp dir (configs, logs).
#
# Needs: root, Debian (apt-get installs slurm-wlm and munge when missing), hyperfine, curl, jq,
# and a release build at target/release/qm (cargo build --release -p qm); nothing is rebuilt.
# It starts munged, slurmctld, slurmd and qm serve itself and stops exactly those at exit; it
# refuses to run if a slurmctld or slurmd already holds the Slurm ports.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
warmup=${2:-5}
http_runs=${HTTP_RUNS:-1000}
qm=$PWD/target/release/qm
[ -x "$qm" ] || { echo "build first: cargo build --release -p qm" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (slurmd, munged as the munge user, cgroups)" >&2; exit 2; }
for t in hyperfine curl jq; do
  command -v "$t" >/dev/null || { echo "needs $t (apt-get install $t)" >&2; exit 2; }
done

# --- Slurm and munge, from Debian, when missing ------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v srun >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || create-munge-key -f
  chown munge:munge /etc/munge/munge.key
  chmod 0600 /etc/munge/munge.key
fi

ctld_port=${SLURMCTLD_PORT:-6817}
slurmd_port=${SLURMD_PORT:-6818}
for p in "$ctld_port" "$slurmd_port"; do
  if ss -Hltn "sport = :$p" | grep -q .; then
    echo "port $p is taken (a Slurm already running?); set SLURMCTLD_PORT/SLURMD_PORT" >&2
    exit 2
  fi
done

work=$(mktemp -d /tmp/qm-exec-vs-srun.XXXXXX)
chmod 0755 "$work" # munged (as munge) must reach its socket dir inside
out=${OUT:-/tmp/qm-exec-vs-srun-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
munged_pid=""
qm_parent=qm-bench-exec-vs-srun # qm's cgroups: /sys/fs/cgroup/*/$qm_parent
slurm_cg=slurm_$(hostname -s)   # Slurm's (SLURM_CGROUP=1): /sys/fs/cgroup/*/$slurm_cg
ls -d /sys/fs/cgroup/*/"$slurm_cg" >/dev/null 2>&1 && had_slurm_cg=1 || had_slurm_cg=""
ctld_pid=""
slurmd_pid=""
qm_pid=""
watch_pid=""

stop() { # PID: TERM, then KILL after 10 s
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null
  stop "$qm_pid"
  stop "$slurmd_pid"
  stop "$ctld_pid"
  stop "$munged_pid"
  wait 2>/dev/null
  # the (empty) cgroup trees left behind: qm's, and Slurm's when this run made them
  local trees=(/sys/fs/cgroup/*/"$qm_parent") c
  [ -n "$had_slurm_cg" ] || trees+=(/sys/fs/cgroup/*/"$slurm_cg")
  for c in "${trees[@]}"; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

wait_for() { # SECONDS WHAT CMD...: poll CMD every 0.2 s
  local n=$(( $1 * 5 )) what=$2 i
  shift 2
  for i in $(seq "$n"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for $what" >&2
  return 1
}
dump_logs() {
  for f in "$work"/munge/munged.log "$work"/slurm/slurmctld.log "$work"/slurm/slurmd.log "$work"/qm.log; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }
  done
  return 1
}

# --- munged, on a private socket ---------------------------------------------------------------
mkdir -p "$work/munge"
chown munge:munge "$work/munge"
chmod 0755 "$work/munge" # munged wants its socket dir searchable by all
sock=$work/munge/munge.socket.2
setpriv --reuid=munge --regid=munge --init-groups munged -F --socket="$sock" --key-file=/etc/munge/munge.key \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
  --seed-file="$work/munge/munged.seed" >>"$work/munge/munged.out" 2>&1 &
munged_pid=$!
wait_for 10 munged test -S "$sock" || dump_logs
munge -S "$sock" -n | unmunge -S "$sock" >/dev/null || { echo "munge round trip failed" >&2; dump_logs; }

# --- slurm.conf, single node on localhost ------------------------------------------------------
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.85 }' /proc/meminfo)
if [ -n "${SLURM_CGROUP:-}" ]; then
  proctrack=proctrack/cgroup
  task=task/cgroup
else
  proctrack=proctrack/linuxproc
  task=task/none
fi
sd=$work/slurm
mkdir -p "$sd/state" "$sd/spool"
export SLURM_CONF=$sd/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=qmbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$sd/state
SlurmdSpoolDir=$sd/spool
SlurmctldPidFile=$sd/slurmctld.pid
SlurmdPidFile=$sd/slurmd.pid
SlurmctldLogFile=$sd/slurmctld.log
SlurmdLogFile=$sd/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=$proctrack
TaskPlugin=$task
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if [ -n "${SLURM_CGROUP:-}" ]; then
  cat > "$sd/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=yes
ConstrainRAMSpace=yes
EOF
fi

slurmctld -D -i -f "$SLURM_CONF" >>"$sd/slurmctld.out" 2>&1 &
ctld_pid=$!
wait_for 20 slurmctld scontrol ping || dump_logs
slurmd -D -f "$SLURM_CONF" >>"$sd/slurmd.out" 2>&1 &
slurmd_pid=$!
node_idle() { [ "$(sinfo -h -N -n "$host" -o %T)" = idle ]; }
wait_for 30 "the node to be idle" node_idle || { sinfo -N >&2; dump_logs; }
srun -n1 --mem=64M true || { echo "srun does not work" >&2; dump_logs; }
slurm_version=$(sinfo -V)

# --- qm serve ----------------------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '[agents]\ncgroup_parent = "%s"\n' "$qm_parent" > "$work/qm.toml"
"$qm" serve --config "$work/qm.toml" --data-dir "$work/qm" --listen "127.0.0.1:$port" >"$work/qm.log" 2>&1 &
qm_pid=$!
base=http://127.0.0.1:$port
wait_for 30 "qm serve" curl -fsS "$base/readyz" || dump_logs
wait_for 10 "the admin token" test -s "$work/qm/admin.token" || dump_logs
export QM_SERVER=$base
QM_TOKEN=$(tr -d '\n' < "$work/qm/admin.token")
export QM_TOKEN
"$qm" exec --cpu 100m --memory 64Mi -- true || { echo "qm exec does not work" >&2; dump_logs; }

# one admission over HTTP: POST the allocation, DELETE it
cat > "$work/admit.sh" <<EOF
#!/bin/sh
set -e
id=\$(curl -fsS -H "Authorization: Bearer \$QM_TOKEN" -H 'Content-Type: application/json' \
  -d '{"agent":"bench","resources":{"cpu":"100m","memory":"64Mi"}}' "$base/v1/allocations" | jq -r .id)
curl -fsS -o /dev/null -H "Authorization: Bearer \$QM_TOKEN" -X DELETE "$base/v1/allocations/\$id"
EOF
chmod +x "$work/admit.sh"
"$work/admit.sh" || { echo "POST/DELETE /v1/allocations does not work" >&2; dump_logs; }

# the same admission without process start-ups: one kept-alive connection, timed in-process
cat > "$work/admit.py" <<'PY'
import http.client, json, os, statistics, sys, time
port, n, warm, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
hdr = {"Authorization": "Bearer " + os.environ["QM_TOKEN"], "Content-Type": "application/json"}
body = json.dumps({"agent": "bench", "resources": {"cpu": "100m", "memory": "64Mi"}})
c = http.client.HTTPConnection("127.0.0.1", port)
post, pair = [], []
for i in range(warm + n):
    t0 = time.perf_counter()
    c.request("POST", "/v1/allocations", body, hdr)
    r = c.getresponse()
    doc = json.loads(r.read())
    t1 = time.perf_counter()
    assert r.status == 201 and doc["state"] == "granted", (r.status, doc)
    c.request("DELETE", "/v1/allocations/" + doc["id"], headers=hdr)
    r = c.getresponse()
    r.read()
    t2 = time.perf_counter()
    assert r.status < 300, r.status
    if i >= warm:
        post.append((t1 - t0) * 1000)
        pair.append((t2 - t0) * 1000)
res = {}
for name, xs in (("POST (admission)", post), ("POST+DELETE", pair)):
    res[name] = {"median": statistics.median(xs), "mean": statistics.mean(xs), "min": min(xs),
                 "max": max(xs), "stddev": statistics.stdev(xs), "runs": len(xs)}
json.dump(res, open(out, "w"), indent=1)
PY

# --- measure -----------------------------------------------------------------------------------
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# note any compiler that runs alongside (on 2 cores a cargo build skews every figure)
: > "$work/interference"
while sleep 0.5; do
  ps -eo comm= | grep -xE 'rustc|cargo|cc1|cc1plus|ld|ld.lld|clang' >> "$work/interference" || true
done &
watch_pid=$!
hyperfine -N --warmup "$warmup" --runs "$runs" --export-json "$out/results.json" \
  --export-markdown "$out/results.md" \
  -n srun "srun -n1 --mem=64M true" \
  -n "qm exec" "$qm exec --cpu 100m --memory 64Mi -- true" \
  -n true "true" \
  -n "srun --version" "srun --version" \
  -n "qm --version" "$qm --version" \
  -n "curl POST+DELETE" "$work/admit.sh"
python3 "$work/admit.py" "$port" "$http_runs" "$warmup" "$out/http.json"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
watch_pid=""
busy=$(sort -u "$work/interference" | paste -sd, -)

echo
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cpus; $slurm_version ($proctrack, $task); qm $("$qm" --version | awk '{print $2}')"
echo "$runs runs after $warmup warmup, milliseconds:"
jq -r '
  ["command", "p50", "mean", "min", "max", "stddev"],
  (.results[] | [.command] + ([.median, .mean, .min, .max, .stddev] | map(. * 1000 * 100 | round / 100 | tostring)))
  | @tsv' "$out/results.json" | column -t -s $'\t'
echo
echo "one admission over a kept-alive HTTP connection (python http.client), $http_runs runs, milliseconds:"
jq -r '
  ["request", "p50", "mean", "min", "max", "stddev"],
  (to_entries[] | [.key] + ([.value.median, .value.mean, .value.min, .value.max, .value.stddev]
    | map(. * 1000 | round / 1000 | tostring)))
  | @tsv' "$out/http.json" | column -t -s $'\t'
if [ -n "$busy" ]; then
  echo
  echo "WARNING: $busy ran during the measurement; rerun on a quiet machine"
fi
echo "hyperfine export: $out/results.json, $out/results.md"
