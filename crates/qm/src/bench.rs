//! `qm bench`: a load generator against a running daemon. N clients in a closed loop, each
//! asking for an allocation (and, with `--release`, giving it back) for a duration; prints
//! throughput and latency percentiles. Every acknowledged allocation is durable, so this
//! measures durable allocations per second.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

/// `qm bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// Concurrent clients (each its own connection)
    #[arg(long, short = 'c', default_value_t = 64)]
    clients: usize,
    /// How long to run, in seconds
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Release each allocation right after it is granted (keeps the node from filling up)
    #[arg(long)]
    release: bool,
    /// Cpu per request
    #[arg(long, default_value = "1m")]
    cpu: String,
    /// Memory per request
    #[arg(long, default_value = "1Mi")]
    memory: String,
}

/// Percentile `p` (0..=1) of sorted microsecond samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn bench(
    server: &str,
    args: &BenchArgs,
    out: &mut impl Write,
) -> Result<(), crate::client::Failure> {
    if args.clients == 0 || !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err(crate::client::Failure {
            code: 2,
            message: "--clients must be positive and --duration 0 to 3600 seconds".to_owned(),
        });
    }
    let base = server.trim_end_matches('/').to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let samples: Arc<Mutex<Vec<u64>>> = Arc::default();
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let workers: Vec<_> = (0..args.clients)
        .map(|w| {
            let (stop, done, errors, samples, first_error) =
                (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&errors), Arc::clone(&samples), Arc::clone(&first_error));
            let (base, args) = (base.clone(), args.clone());
            thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .new_agent();
                let mut mine = Vec::with_capacity(4096);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = json!({ "agent": format!("bench-{w}-{i}"), "resources": { "cpu": args.cpu, "memory": args.memory } }).to_string();
                    let t0 = Instant::now();
                    let resp = agent.post(&format!("{base}/v1/allocations")).header("content-type", "application/json").send(body.as_bytes());
                    let ok = match resp {
                        Ok(mut r) => {
                            let status = r.status().as_u16();
                            let text = r.body_mut().read_to_string().unwrap_or_default();
                            if status == 201 {
                                if args.release {
                                    let id = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["id"].as_str().map(str::to_owned));
                                    if let Some(id) = id {
                                        let _ = agent.delete(&format!("{base}/v1/allocations/{id}")).call().map(|mut r| r.body_mut().read_to_string());
                                    }
                                }
                                true
                            } else {
                                let mut e = first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                                e.get_or_insert_with(|| format!("{status}: {text}"));
                                false
                            }
                        }
                        Err(err) => {
                            let mut e = first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            e.get_or_insert_with(|| err.to_string());
                            false
                        }
                    };
                    let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if ok {
                        mine.push(us);
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(mine);
            })
        })
        .collect();
    let start = Instant::now();
    let total = Duration::from_secs_f64(args.duration);
    let mut err = std::io::stderr();
    while start.elapsed() < total {
        thread::sleep(Duration::from_millis(250).min(total.saturating_sub(start.elapsed())));
        let frac = start.elapsed().as_secs_f64() / args.duration;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let filled = (frac.min(1.0) * 30.0) as usize;
        let _ = write!(
            err,
            "\r[{:<30}] {:>5.1}s {:>9} ok {:>6} errors",
            "#".repeat(filled),
            start.elapsed().as_secs_f64(),
            done.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed)
        );
        let _ = err.flush();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = writeln!(err);
    let mut s = samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    s.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rate = s.len() as f64 / elapsed;
    let ms = |us: u64| {
        #[allow(clippy::cast_precision_loss)]
        let v = us as f64 / 1000.0;
        v
    };
    writeln!(
        out,
        "{} allocations{} in {elapsed:.1}s with {} clients: {rate:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} errors",
        s.len(),
        if args.release { " (each released)" } else { "" },
        args.clients,
        ms(percentile(&s, 0.50)),
        ms(percentile(&s, 0.90)),
        ms(percentile(&s, 0.99)),
        ms(s.last().copied().unwrap_or(0)),
        errors.load(Ordering::Relaxed)
    )?;
    if let Some(e) = first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
    {
        writeln!(out, "first error: {e}")?;
    }
    Ok(())
}
