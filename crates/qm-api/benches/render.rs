//! `/metrics` rendering with 1,000 agents: 1,000 real processes (`sleep`) are spawned, read by
//! the real host and agent collectors twice (so rates exist), and the exposition (Prometheus
//! text and OpenMetrics) is rendered from that collection, as the daemon does per scrape. The
//! size of one exposition is printed once. Every process is killed at the end.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use qm_api::metrics::{Format, render};
use qm_engine::metrics::Snapshot;
use qm_sys::Paths;
use qm_sys::agent::{AgentCollector, Target};
use qm_sys::host::HostCollector;
use qm_sys::metric::Sample;

const N_AGENTS: usize = 1000;

static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();

struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn main() {
    let fleet = Fleet(
        (0..N_AGENTS)
            .map(|_| {
                Command::new("sleep")
                    .arg("600")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect(),
    );
    let targets: Vec<Target> = fleet
        .0
        .iter()
        .enumerate()
        .map(|(i, c)| Target {
            id: format!("coder-{i:04}"),
            pid: c.id(),
            start_time: None,
            cgroup: None,
        })
        .collect();
    let paths = Paths::default();
    let mut host = HostCollector::new(&paths);
    let mut agents = AgentCollector::new(&paths);
    let _ = host.collect(Instant::now());
    let _ = agents.collect(&targets, Instant::now());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let now = Instant::now();
    let mut samples = Vec::new();
    host.collect(now).samples(&mut samples);
    qm_sys::agent::samples(&agents.collect(&targets, now), &mut samples);
    let text = render(&Snapshot::default(), &samples, &[], Format::Prometheus);
    eprintln!(
        "{} samples from {N_AGENTS} agents and the host: exposition of {} KiB, {} lines",
        samples.len(),
        text.len() / 1024,
        text.lines().count()
    );
    let _ = SAMPLES.set(samples);
    divan::main();
    drop(fleet);
}

#[divan::bench(args = ["prometheus", "openmetrics"])]
fn render_1000_agents(bencher: divan::Bencher, format: &str) {
    let samples = SAMPLES.get().expect("collected");
    let fmt = if format == "openmetrics" {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let snapshot = Snapshot::default();
    bencher.bench(|| render(&snapshot, samples, &[], fmt).len());
}
