//! `qm bench sizing`: replays usage traces through the recommender (`qm_recommend`) and
//! prints, per trace and in all, the memory slack (allocated but unused, as a share of
//! allocated), OOM kills (samples over the memory allocation) and changes of three policies:
//! the request as written, a VPA-like baseline, and the learned recommender. Traces are the
//! generated suite (fixed seed) or recorded history: CSV files as `qm metrics export` writes
//! them (`time,name,...,agent,...,value`) of `qm_agent_cpu_usage_cores` and
//! `qm_agent_memory_bytes`, one target per agent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use qm_recommend::traces::{Trace, suite};
use qm_recommend::{Config, Outcome, Policy, Sample, Sizing, evaluate};

use crate::client::Failure;

/// `qm bench sizing` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SizingArgs {
    /// Recorded history (CSV from `qm metrics export`; repeatable: cpu and memory files);
    /// without it, the generated suite
    #[arg(long, value_name = "FILE")]
    trace: Vec<PathBuf>,
    /// The generated suite's seed
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The request recorded targets are taken to have asked for, as cpu,memory
    #[arg(long, default_value = "1,2Gi", value_name = "CPU,MEMORY")]
    written: String,
}

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

/// One agent's cpu and memory at one time, as far as the files say.
type Point = (Option<f64>, Option<f64>);

/// Reads recorded history into one trace per agent.
fn recorded(files: &[PathBuf], written: Sizing) -> Result<Vec<Trace>, Failure> {
    // agent -> time (ms) -> (cpu, memory)
    let mut by_agent: BTreeMap<String, BTreeMap<u64, Point>> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| usage(format!("--trace {}: {e}", f.display())))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(time), Some(series), Some(agent), Some(value)) =
            (col("time"), col("name"), col("agent"), col("value"))
        else {
            return Err(usage(format!(
                "--trace {}: expected the columns time, name, agent and value (qm metrics export)",
                f.display()
            )));
        };
        for (n, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            let bad = || usage(format!("--trace {}: line {}: {line:?}", f.display(), n + 2));
            let t = cells
                .get(time)
                .and_then(|t| qm_proto::parse_rfc3339(t))
                .ok_or_else(bad)?;
            let v: f64 = cells
                .get(value)
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?;
            let a = cells.get(agent).ok_or_else(bad)?.to_string();
            let e = by_agent.entry(a).or_default().entry(t).or_default();
            match cells.get(series).copied() {
                Some("qm_agent_cpu_usage_cores") => e.0 = Some(v),
                Some("qm_agent_memory_bytes") => e.1 = Some(v),
                _ => {}
            }
        }
    }
    Ok(by_agent
        .into_iter()
        .map(|(name, points)| {
            let (mut cpu, mut mem) = (0.0, 0.0);
            let samples = points
                .into_iter()
                .map(|(t, (c, m))| {
                    cpu = c.unwrap_or(cpu);
                    mem = m.unwrap_or(mem);
                    Sample {
                        t_s: t as f64 / 1000.0,
                        cpu,
                        memory: mem,
                    }
                })
                .collect();
            Trace {
                name,
                written,
                samples,
            }
        })
        .collect())
}

fn parse_written(s: &str) -> Result<Sizing, Failure> {
    let bad = || usage(format!("--written {s:?}: give cpu,memory such as 1,2Gi"));
    let (c, m) = s.split_once(',').ok_or_else(bad)?;
    let cpu =
        qm_core::quantity::parse(qm_core::quantity::Unit::Millicores, c).map_err(|_| bad())?;
    let mem = qm_core::quantity::parse(qm_core::quantity::Unit::Bytes, m).map_err(|_| bad())?;
    Ok(Sizing {
        cpu: cpu as f64 / 1000.0,
        memory: mem as f64,
    })
}

pub(crate) fn sizing(args: &SizingArgs, out: &mut impl Write) -> Result<(), Failure> {
    let written = parse_written(&args.written)?;
    let traces = if args.trace.is_empty() {
        suite(args.seed)
    } else {
        recorded(&args.trace, written)?
    };
    let policies = [
        ("written", Policy::Written),
        ("vpa-like", Policy::Learned(Config::vpa_like())),
        ("learned", Policy::Learned(Config::learned())),
    ];
    writeln!(
        out,
        "{:<14} {:>8} | {:>22} | {:>22} | {:>22}",
        "trace",
        "samples",
        "written slack/oom/chg",
        "vpa-like slack/oom/chg",
        "learned slack/oom/chg"
    )?;
    let mut totals = [Outcome::default(), Outcome::default(), Outcome::default()];
    for t in &traces {
        let mut cells = Vec::new();
        for (i, (_, p)) in policies.iter().enumerate() {
            let o = evaluate(&t.samples, t.written, p);
            totals[i].add(&o);
            cells.push(format!(
                "{:>6.1}% {:>6} {:>6}",
                o.memory_slack() * 100.0,
                o.ooms,
                o.changes
            ));
        }
        writeln!(
            out,
            "{:<14} {:>8} | {:>22} | {:>22} | {:>22}",
            t.name,
            t.samples.len(),
            cells[0],
            cells[1],
            cells[2]
        )?;
    }
    writeln!(out)?;
    for (i, (name, _)) in policies.iter().enumerate() {
        let o = &totals[i];
        writeln!(
            out,
            "{name:<9} memory slack {:>5.1}%  cpu slack {:>5.1}%  overrun {:.3}% ({} OOM kills in {} samples)  cpu throttled {:.1}%  changes {}",
            o.memory_slack() * 100.0,
            o.cpu_slack() * 100.0,
            o.overrun() * 100.0,
            o.ooms,
            o.samples,
            o.throttled as f64 / o.samples.max(1) as f64 * 100.0,
            o.changes
        )?;
    }
    Ok(())
}
