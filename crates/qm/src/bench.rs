//! `qm bench`: a load generator against a running daemon. N clients in a closed loop, each
//! asking for an allocation (and, with `--release`, giving it back) for a duration; prints
//! throughput and latency percentiles. Every acknowledged allocation is durable, so this
//! measures durable allocations per second.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    #[command(subcommand)]
    pub(crate) what: Option<BenchWhat>,
}

/// What else `qm bench` measures.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum BenchWhat {
    /// Replay usage traces through the recommender: slack, OOM kills and changes against the
    /// request as written and a VPA-like baseline (no daemon needed)
    Sizing(crate::sizing::SizingArgs),
    /// Replay load curves against a simulated fleet: seconds under target capacity,
    /// replica-seconds and scale events of the reactive (HPA) and the predictive autoscaler
    /// (no daemon needed)
    Scaling(crate::scaling::ScalingArgs),
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

/// Splits `http://host:port` into the address to connect to and the Host header.
fn target(server: &str) -> Option<(String, String)> {
    let rest = server.strip_prefix("http://")?.trim_end_matches('/');
    let host = rest.split('/').next()?.to_owned();
    let addr = if host.contains(':') {
        host.clone()
    } else {
        format!("{host}:80")
    };
    Some((addr, host))
}

/// One keep-alive HTTP/1.1 connection, speaking just enough of the protocol for the bench
/// (requests with bodies; responses with Content-Length), so the generator spends its CPU on
/// requests rather than on itself.
struct Conn {
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
    /// The Host header's value, and the Authorization header line when there is a token.
    host: String,
}

impl Conn {
    async fn open(addr: &str, host: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufStream::new(stream),
            host: host.to_owned(),
        })
    }

    /// Sends a request and returns the status and body.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        self.stream.flush().await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).await?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }
}

/// What the clients share: when to stop, and the tallies.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    done: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// One client's closed loop until `stop`; returns its latencies in microseconds.
async fn client(
    w: usize,
    addr: String,
    host: String,
    args: BenchArgs,
    shared: Arc<Shared>,
) -> Vec<u64> {
    let Shared {
        stop,
        done,
        errors,
        first_error,
    } = &*shared;
    let mut mine = Vec::with_capacity(4096);
    let mut conn: Option<Conn> = None;
    let mut i = 0u64;
    let note = |e: String| {
        errors.fetch_add(1, Ordering::Relaxed);
        first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(e);
    };
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(&addr, &host).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    note(format!("cannot connect to {addr}: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let body = json!({ "agent": format!("bench-{w}-{i}"), "resources": { "cpu": args.cpu, "memory": args.memory } }).to_string();
        let t0 = Instant::now();
        match c.call("POST", "/v1/allocations", &body).await {
            Ok((201, text)) => {
                if args.release {
                    let id = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned));
                    if let Some(id) = id
                        && let Err(e) = c.call("DELETE", &format!("/v1/allocations/{id}"), "").await
                    {
                        note(e.to_string());
                        conn = None;
                        continue;
                    }
                }
                mine.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, text)) => {
                note(format!("{status}: {text}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                note(e.to_string());
                conn = None;
            }
        }
    }
    mine
}

pub(crate) fn bench(
    server: &str,
    token: Option<&str>,
    args: &BenchArgs,
    out: &mut impl Write,
) -> Result<(), crate::client::Failure> {
    if args.clients == 0 || !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err(crate::client::Failure {
            code: 2,
            message: "--clients must be positive and --duration 0 to 3600 seconds".to_owned(),
        });
    }
    let Some((addr, mut host)) = target(server) else {
        return Err(crate::client::Failure {
            code: 2,
            message: format!("--server {server:?}: qm bench speaks plain http://host:port"),
        });
    };
    // the token rides on the Host header's line, so each request carries it
    if let Some(t) = token {
        host = format!("{host}\r\nAuthorization: Bearer {t}");
    }
    let shared = Arc::new(Shared::default());
    let Shared {
        stop,
        done,
        errors,
        first_error,
    } = &*shared;
    // One thread drives every client: the generator stays light beside the daemon.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::client::Failure {
            code: 1,
            message: format!("cannot start the runtime: {e}"),
        })?;
    let total = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let samples: Vec<u64> = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.clients)
            .map(|w| {
                tokio::spawn(client(
                    w,
                    addr.clone(),
                    host.clone(),
                    args.clone(),
                    Arc::clone(&shared),
                ))
            })
            .collect();
        let mut err = std::io::stderr();
        while start.elapsed() < total {
            tokio::time::sleep(
                Duration::from_millis(250).min(total.saturating_sub(start.elapsed())),
            )
            .await;
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
        let _ = writeln!(err);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut s = samples;
    s.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rate = s.len() as f64 / elapsed;
    #[allow(clippy::cast_precision_loss)]
    let ms = |us: u64| us as f64 / 1000.0;
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
