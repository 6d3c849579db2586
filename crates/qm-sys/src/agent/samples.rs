//! The flat form of agent snapshots: `qm_agent_*` samples, each labelled `agent`; the
//! pressure ratios also carry `resource` (cpu, memory, io), `kind` (some, full) and
//! `window` (10s, 60s, 300s). A gone agent gives `qm_agent_up 0` only; a value the agent
//! lacks gives no sample.

use super::AgentSnapshot;
use super::desc;
use crate::metric::{Desc, Sample};

/// Appends the samples of `snapshots` to `out`.
pub fn samples(snapshots: &[AgentSnapshot], out: &mut Vec<Sample>) {
    for s in snapshots {
        let agent = s.id.as_str();
        let mut push = |d: &'static Desc, v: Option<f64>| {
            if let Some(v) = v {
                out.push(Sample::with_label(d, "agent", agent, v));
            }
        };
        push(&desc::UP, Some(if s.alive { 1.0 } else { 0.0 }));
        if !s.alive {
            continue;
        }
        let n = |v: Option<u64>| v.map(|v| v as f64);
        push(&desc::CPU_SECONDS, s.cpu_seconds_total);
        push(&desc::CPU_USAGE, s.cpu_usage_cores);
        push(&desc::MEMORY, n(s.memory_bytes));
        push(&desc::MEMORY_ANON, n(s.memory_anon_bytes));
        push(&desc::MEMORY_FILE, n(s.memory_file_bytes));
        push(&desc::IO_READ, n(s.io_read_bytes_total));
        push(&desc::IO_WRITTEN, n(s.io_written_bytes_total));
        push(&desc::IO_READ_RATE, s.io_read_bytes_per_second);
        push(&desc::IO_WRITE_RATE, s.io_write_bytes_per_second);
        push(&desc::PROCESSES, n(s.processes));
        push(&desc::THREADS, n(s.threads));
        push(&desc::OPEN_FILES, n(s.open_files));
        push(&desc::OOM_KILLS, n(s.oom_kills));
        let Some(p) = &s.pressure else { continue };
        for (resource, psi) in [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)] {
            let Some(psi) = psi else { continue };
            for (kind, stall) in [("some", Some(psi.some)), ("full", psi.full)] {
                let Some(stall) = stall else { continue };
                let windows = [
                    ("10s", stall.avg10),
                    ("60s", stall.avg60),
                    ("300s", stall.avg300),
                ];
                for (window, avg) in windows {
                    out.push(Sample {
                        desc: &desc::PRESSURE,
                        labels: vec![
                            ("agent", agent.to_owned()),
                            ("resource", resource.to_owned()),
                            ("kind", kind.to_owned()),
                            ("window", window.to_owned()),
                        ],
                        value: avg / 100.0,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Pressure, Psi, Source, Stall};
    use super::*;

    #[test]
    fn gone_agents_give_up_zero_only_and_pressure_is_a_ratio() {
        let mut alive = AgentSnapshot::gone("a", Source::Cgroup);
        alive.alive = true;
        alive.memory_bytes = Some(10);
        let stall = Stall {
            avg10: 50.0,
            avg60: 10.0,
            avg300: 1.0,
            total_us: 5,
        };
        alive.pressure = Some(Pressure {
            memory: Some(Psi {
                some: stall,
                full: None,
            }),
            ..Pressure::default()
        });
        let gone = AgentSnapshot::gone("b", Source::Proc);
        let mut out = Vec::new();
        samples(&[alive, gone], &mut out);
        let names: Vec<_> = out.iter().map(|s| (s.desc.name, s.value)).collect();
        assert_eq!(
            names,
            [
                ("qm_agent_up", 1.0),
                ("qm_agent_memory_bytes", 10.0),
                ("qm_agent_pressure_ratio", 0.5),
                ("qm_agent_pressure_ratio", 0.1),
                ("qm_agent_pressure_ratio", 0.01),
                ("qm_agent_up", 0.0),
            ]
        );
        assert_eq!(out[2].labels[1], ("resource", "memory".to_owned()));
        assert_eq!(out[2].labels[3], ("window", "10s".to_owned()));
        assert!(out.iter().all(|s| s.labels[0].0 == "agent"));
        for d in desc::ALL {
            assert!(d.name.starts_with("qm_agent_"));
        }
    }

    #[test]
    fn the_collector_can_move_to_its_own_thread() {
        fn send<T: Send + Sync>() {}
        send::<crate::agent::AgentCollector>();
        send::<AgentSnapshot>();
    }
}
