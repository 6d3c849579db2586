//! Health probes, the IO half of health checks: an HTTP GET (healthy on 2xx or 3xx), a
//! command (healthy on exit 0), each under the check's timeout. The HTTP probe speaks just
//! enough HTTP/1.0 over a TCP stream to read a status line. Also the conversion from the
//! wire form of a check to the pure `HealthSpec`, naming bad fields.

use std::time::Duration;

use qm_proto::{FieldProblem, HealthWire};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::logic::health::{HealthKind, HealthSpec, ProbeResult};

/// The pure spec of a wire health check, or the bad fields.
pub(crate) fn spec_of(h: &HealthWire) -> Result<HealthSpec, Vec<FieldProblem>> {
    let ms = |s: Option<f64>, default: u64| s.map_or(default, |s| (s * 1000.0) as u64);
    let kind = if let Some(url) = &h.http {
        HealthKind::Http { url: url.clone() }
    } else if let Some(argv) = &h.exec {
        HealthKind::Exec { argv: argv.clone() }
    } else if let Some(every) = h.heartbeat_s {
        HealthKind::Heartbeat {
            every_ms: (every * 1000.0) as u64,
        }
    } else {
        return Err(vec![FieldProblem::new(
            "health",
            "give exactly one of http, exec, heartbeat_s",
        )]);
    };
    let spec = HealthSpec {
        kind,
        period_ms: ms(h.period_s, 10_000),
        timeout_ms: ms(h.timeout_s, 1_000),
        failure_threshold: h.failure_threshold.unwrap_or(3),
        initial_delay_ms: ms(h.initial_delay_s, 0),
    };
    let problems: Vec<FieldProblem> = spec
        .validate()
        .into_iter()
        .map(|(field, message)| {
            // the pure spec counts milliseconds; the API's fields are seconds
            let field = match field.as_str() {
                "period_ms" => "period_s".to_owned(),
                "timeout_ms" => "timeout_s".to_owned(),
                "initial_delay_ms" => "initial_delay_s".to_owned(),
                f if f.ends_with("every_ms") => "heartbeat_s".to_owned(),
                f if f.ends_with("url") => "http".to_owned(),
                f if f.ends_with("argv") => "exec".to_owned(),
                _ => field,
            };
            FieldProblem::new(&format!("health.{field}"), message)
        })
        .collect();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems)
    }
}

/// Runs one probe of `spec` (heartbeat checks have none: they are timed by beats).
pub(crate) async fn run(spec: &HealthSpec) -> ProbeResult {
    let timeout = Duration::from_millis(spec.timeout_ms.max(1));
    let probe = async {
        match &spec.kind {
            HealthKind::Http { url } => http(url).await,
            HealthKind::Exec { argv } => exec(argv).await,
            HealthKind::Heartbeat { .. } => ProbeResult::Ok,
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or(ProbeResult::TimedOut)
}

async fn http(url: &str) -> ProbeResult {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = match tokio::net::TcpStream::connect(host).await {
        Ok(s) => s,
        Err(e) => return ProbeResult::Failed(format!("cannot connect to {host}: {e}")),
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: qm-health\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return ProbeResult::Failed(format!("cannot send the request: {e}"));
    }
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        match stream.read(&mut head[n..]).await {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if head[..n].contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return ProbeResult::Failed(format!("cannot read the answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status: Option<u16> = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    match status {
        Some(s) if (200..400).contains(&s) => ProbeResult::Ok,
        Some(s) => ProbeResult::Failed(format!("GET {url} answered {s}")),
        None => ProbeResult::Failed(format!("GET {url}: not an HTTP answer")),
    }
}

async fn exec(argv: &[String]) -> ProbeResult {
    let Some((program, args)) = argv.split_first() else {
        return ProbeResult::Failed("empty command".to_owned());
    };
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => ProbeResult::Ok,
        Ok(s) => ProbeResult::Failed(format!("{program} exited with {s}")),
        Err(e) => ProbeResult::Failed(format!("cannot run {program}: {e}")),
    }
}
