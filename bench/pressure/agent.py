"""A benchmark agent for bench/pressure-vs-earlyoom.sh: holds or leaks memory and reports, on
SIGTERM or when it gives up, what happened to it, timed on CLOCK_MONOTONIC (the same clock for
every process on the host).

    agent.py hold MIB OUT
    agent.py leak STEP_MIB STEP_S THRESHOLD_BYTES CAP_BYTES MEASURE OUT

MEASURE says what "used" is, the figure the threshold is about:
  host          MemTotal - MemAvailable from /proc/meminfo (earlyoom's and qm's host view)
  cgroup:DIR    the sum of memory.usage_in_bytes of the groups under DIR (qm's managed view)

The leaker grows STEP_MIB every STEP_S (touching every page), reads MEASURE after each step,
and notes the moment it first reads at or above THRESHOLD_BYTES (the start of that step, so the
latency is never understated). It stops growing at CAP_BYTES (so the kernel's OOM killer is
never reached) and gives up after 60 s. OUT holds one line of key=value pairs, rewritten as
things happen: role, pid, end (running, sigterm, timeout), size_mib, crossed_at and sigterm_at
(CLOCK_MONOTONIC seconds), and latency_ms when the same agent crossed and got SIGTERM.
"""

import glob
import os
import signal
import sys
import time


def used(measure):
    if measure == "host":
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0]) * 1024
        return info["MemTotal"] - info["MemAvailable"]
    total = 0
    for path in glob.glob(measure.split(":", 1)[1] + "/*/memory.usage_in_bytes"):
        try:
            with open(path) as f:
                total += int(f.read())
        except OSError:
            pass
    return total


def main():
    role = sys.argv[1]
    out = sys.argv[-1]
    state = {"crossed": None, "size": 0, "term": None}

    def report(why):
        fields = ["role=%s" % role, "pid=%d" % os.getpid(), "end=%s" % why,
                  "size_mib=%d" % (state["size"] >> 20)]
        if state["crossed"] is not None:
            fields.append("crossed_at=%.6f" % state["crossed"])
        if state["term"] is not None:
            fields.append("sigterm_at=%.6f" % state["term"])
            if state["crossed"] is not None:
                fields.append("latency_ms=%.1f" % ((state["term"] - state["crossed"]) * 1000))
        with open(out + ".tmp", "w") as f:
            f.write(" ".join(fields) + "\n")
        os.replace(out + ".tmp", out)

    def on_term(signum, frame):
        state["term"] = time.monotonic()
        report("sigterm")
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    blocks = []
    if role == "hold":
        mib = int(sys.argv[2])
        blocks.append(b"x" * (mib << 20))
        state["size"] = mib << 20
        report("running")
        time.sleep(3600)
        return
    step = int(sys.argv[2]) << 20
    step_s = float(sys.argv[3])
    threshold = int(sys.argv[4])
    cap = int(sys.argv[5])
    measure = sys.argv[6]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        t = time.monotonic()
        if used(measure) + step < cap:
            blocks.append(b"x" * step)
            state["size"] += step
        if state["crossed"] is None and used(measure) >= threshold:
            state["crossed"] = t
            report("running")
        time.sleep(step_s)
    report("timeout")


main()
