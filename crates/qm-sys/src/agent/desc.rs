//! The descriptions of the `qm_agent_*` series, one static per name. Alert rules and the
//! /metrics tests are written against these names; every series has the label `agent`.

use crate::metric::{Desc, Kind};

/// `qm_agent_up`.
pub static UP: Desc = Desc {
    name: "qm_agent_up",
    help: "Whether the agent's root process or cgroup is alive (1) or gone (0)",
    kind: Kind::Gauge,
};

/// `qm_agent_cpu_seconds_total`.
pub static CPU_SECONDS: Desc = Desc {
    name: "qm_agent_cpu_seconds_total",
    help: "CPU time used by the agent's processes",
    kind: Kind::Counter,
};

/// `qm_agent_cpu_usage_cores`.
pub static CPU_USAGE: Desc = Desc {
    name: "qm_agent_cpu_usage_cores",
    help: "CPU seconds used per second since the last collection (1 is one core busy)",
    kind: Kind::Rate,
};

/// `qm_agent_memory_bytes`.
pub static MEMORY: Desc = Desc {
    name: "qm_agent_memory_bytes",
    help: "Memory charged to the agent's cgroup, or the summed resident set of its processes",
    kind: Kind::Gauge,
};

/// `qm_agent_memory_anon_bytes`.
pub static MEMORY_ANON: Desc = Desc {
    name: "qm_agent_memory_anon_bytes",
    help: "Anonymous memory charged to the agent's cgroup",
    kind: Kind::Gauge,
};

/// `qm_agent_memory_file_bytes`.
pub static MEMORY_FILE: Desc = Desc {
    name: "qm_agent_memory_file_bytes",
    help: "Page cache charged to the agent's cgroup",
    kind: Kind::Gauge,
};

/// `qm_agent_io_read_bytes_total`.
pub static IO_READ: Desc = Desc {
    name: "qm_agent_io_read_bytes_total",
    help: "Bytes the agent read from storage",
    kind: Kind::Counter,
};

/// `qm_agent_io_written_bytes_total`.
pub static IO_WRITTEN: Desc = Desc {
    name: "qm_agent_io_written_bytes_total",
    help: "Bytes the agent wrote to storage",
    kind: Kind::Counter,
};

/// `qm_agent_io_read_bytes_per_second`.
pub static IO_READ_RATE: Desc = Desc {
    name: "qm_agent_io_read_bytes_per_second",
    help: "Bytes read from storage per second since the last collection",
    kind: Kind::Rate,
};

/// `qm_agent_io_write_bytes_per_second`.
pub static IO_WRITE_RATE: Desc = Desc {
    name: "qm_agent_io_write_bytes_per_second",
    help: "Bytes written to storage per second since the last collection",
    kind: Kind::Rate,
};

/// `qm_agent_processes`.
pub static PROCESSES: Desc = Desc {
    name: "qm_agent_processes",
    help: "Processes in the agent's tree or cgroup",
    kind: Kind::Gauge,
};

/// `qm_agent_threads`.
pub static THREADS: Desc = Desc {
    name: "qm_agent_threads",
    help: "Threads in the agent's tree or cgroup",
    kind: Kind::Gauge,
};

/// `qm_agent_open_files`.
pub static OPEN_FILES: Desc = Desc {
    name: "qm_agent_open_files",
    help: "File descriptors open in the agent's processes",
    kind: Kind::Gauge,
};

/// `qm_agent_oom_kills_total`.
pub static OOM_KILLS: Desc = Desc {
    name: "qm_agent_oom_kills_total",
    help: "Processes of the agent's cgroup killed by the OOM killer",
    kind: Kind::Counter,
};

/// `qm_agent_pressure_ratio{agent,resource,kind,window}`.
pub static PRESSURE: Desc = Desc {
    name: "qm_agent_pressure_ratio",
    help: "Share of time the agent's tasks stalled on a resource (PSI), 0 to 1",
    kind: Kind::Gauge,
};

/// Every `qm_agent_*` description.
pub static ALL: [&Desc; 15] = [
    &UP,
    &CPU_SECONDS,
    &CPU_USAGE,
    &MEMORY,
    &MEMORY_ANON,
    &MEMORY_FILE,
    &IO_READ,
    &IO_WRITTEN,
    &IO_READ_RATE,
    &IO_WRITE_RATE,
    &PROCESSES,
    &THREADS,
    &OPEN_FILES,
    &OOM_KILLS,
    &PRESSURE,
];
