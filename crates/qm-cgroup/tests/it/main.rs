//! Integration tests of qm-cgroup: the drivers against fake cgroupfs trees (`fake`,
//! `detect`); spawning with a hold pipe, a session and an `oom_score_adj` (`spawn`, no
//! privilege needed); and the v1 and hybrid drivers on this host's real cgroups (`host`: a
//! group's life, a real OOM kill, a CPU cap, a held child joining its group before it runs),
//! run as root where /sys/fs/cgroup/memory is writable, skipped with one line otherwise.

mod detect;
mod fake;
mod host;
mod spawn;
mod support;
