//! Alert delivery: every `alert.firing` and `alert.resolved` event goes, as the event's JSON,
//! to each configured webhook (HTTP POST, retried with exponential backoff until a 2xx answer
//! or the attempts run out) and to the exec hook (a command run with the JSON on its stdin and
//! the alert in its environment). Each destination has its own thread and queue, so a slow
//! webhook delays nobody else; the event stream itself never waits for delivery.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::bail;
use qm_engine::Engine;
use qm_proto::EventDoc;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

/// `[[alerts.webhooks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Webhook {
    /// `http://host:port/path`.
    url: String,
    /// Seconds one attempt may take (default 5).
    timeout_s: Option<f64>,
    /// Attempts before giving up on one notification (default 6: about a minute of backoff).
    attempts: Option<u32>,
    /// First backoff in seconds, doubled after each failure up to a minute (default 1).
    backoff_s: Option<f64>,
}

/// Where alert notifications go.
#[derive(Debug, Clone, Default)]
pub(crate) struct NotifyConfig {
    webhooks: Vec<Webhook>,
    exec: Option<Vec<String>>,
}

impl NotifyConfig {
    /// Checks the destinations, naming the bad field.
    pub(crate) fn new(webhooks: Vec<Webhook>, exec: Option<Vec<String>>) -> anyhow::Result<Self> {
        for (i, w) in webhooks.iter().enumerate() {
            let field = format!("alerts.webhooks[{i}]");
            if !w.url.starts_with("http://") || w.url.len() <= "http://".len() {
                bail!(
                    "{field}.url: {:?} is not an http:// URL (https needs a local relay for now)",
                    w.url
                );
            }
            if let Some(t) = w.timeout_s
                && !(t.is_finite() && t > 0.0 && t <= 600.0)
            {
                bail!("{field}.timeout_s: {t} is not a number of seconds in (0, 600]");
            }
            if let Some(b) = w.backoff_s
                && !(b.is_finite() && b > 0.0 && b <= 600.0)
            {
                bail!("{field}.backoff_s: {b} is not a number of seconds in (0, 600]");
            }
            if w.attempts == Some(0) || w.attempts.is_some_and(|a| a > 100) {
                bail!("{field}.attempts: must be between 1 and 100");
            }
        }
        if exec
            .as_ref()
            .is_some_and(|e| e.first().is_none_or(String::is_empty))
        {
            bail!(
                "alerts.exec: give the command and its arguments, e.g. [\"/usr/local/bin/page\"]"
            );
        }
        Ok(NotifyConfig { webhooks, exec })
    }
}

/// Starts delivering alert events from `engine`; does nothing without destinations.
pub(crate) fn start(config: &NotifyConfig, engine: &Engine) {
    let mut queues: Vec<mpsc::Sender<String>> = Vec::new();
    for w in &config.webhooks {
        let (tx, rx) = mpsc::channel::<String>();
        let w = w.clone();
        let spawned = thread::Builder::new()
            .name("qm-webhook".to_owned())
            .spawn(move || deliver_webhook(&w, &rx));
        if spawned.is_ok() {
            queues.push(tx);
        }
    }
    if let Some(cmd) = config.exec.clone() {
        let (tx, rx) = mpsc::channel::<String>();
        let spawned = thread::Builder::new()
            .name("qm-alert-exec".to_owned())
            .spawn(move || run_hooks(&cmd, &rx));
        if spawned.is_ok() {
            queues.push(tx);
        }
    }
    if queues.is_empty() {
        return;
    }
    let mut live = engine.subscribe(None).live;
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(event) if event.kind.starts_with("alert.") => {
                    let json = qm_proto::to_json(event.as_ref());
                    for q in &queues {
                        let _ = q.send(json.clone());
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "alert delivery fell behind the event stream");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn deliver_webhook(w: &Webhook, rx: &mpsc::Receiver<String>) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs_f64(w.timeout_s.unwrap_or(5.0))))
        .build()
        .new_agent();
    let attempts = w.attempts.unwrap_or(6);
    let first = Duration::from_secs_f64(w.backoff_s.unwrap_or(1.0));
    for body in rx {
        let mut backoff = first;
        for attempt in 1..=attempts {
            let outcome = agent
                .post(&w.url)
                .header("content-type", "application/json")
                .send(body.as_bytes());
            match outcome {
                Ok(resp) if resp.status().is_success() => break,
                Ok(resp) => {
                    tracing::warn!(url = %w.url, status = resp.status().as_u16(), attempt, "webhook refused an alert");
                }
                Err(error) => {
                    tracing::warn!(url = %w.url, %error, attempt, "webhook unreachable");
                }
            }
            if attempt == attempts {
                tracing::error!(url = %w.url, attempts, "alert not delivered: giving up");
                break;
            }
            thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

fn run_hooks(cmd: &[String], rx: &mpsc::Receiver<String>) {
    let Some((program, args)) = cmd.split_first() else {
        return;
    };
    for body in rx {
        let event: EventDoc = match serde_json::from_str(&body) {
            Ok(e) => e,
            Err(_) => continue,
        };
        let alert = event.alert.unwrap_or_default();
        let child = Command::new(program)
            .args(args)
            .env("QM_EVENT", &event.kind)
            .env("QM_ALERT_RULE", &alert.rule)
            .env("QM_ALERT_STATE", &alert.state)
            .env("QM_ALERT_SEVERITY", &alert.severity)
            .env("QM_ALERT_FINGERPRINT", &alert.fingerprint)
            .env("QM_ALERT_VALUE", alert.value.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        match child {
            Ok(mut child) => {
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(body.as_bytes());
                }
                match child.wait() {
                    Ok(status) if !status.success() => {
                        tracing::warn!(program = %program, %status, "alert hook failed");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(program = %program, %error, "alert hook lost"),
                }
            }
            Err(error) => tracing::warn!(program = %program, %error, "cannot run the alert hook"),
        }
    }
}
