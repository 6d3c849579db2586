//! `qm exec`: the way an orchestrator wraps an agent launch. It asks the daemon for an
//! allocation on a lease and waits for admission, starts CMD as its own child (the user's
//! terminal, environment and working directory) held before `exec` until the daemon has
//! adopted it into the allocation's cgroup, forwards SIGTERM and SIGHUP to it (SIGINT and
//! SIGQUIT from the terminal reach it directly), renews the lease while it runs, releases the
//! allocation when it exits and exits with its code (128 + the signal when a signal ended
//! it). If `qm exec` itself is killed, the
//! lease lapses, the allocation expires and the daemon stops the orphaned agent: nothing
//! leaks.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qm_client::{Client, ClientError};
use serde_json::{Value, json};

use crate::client::Failure;

/// The lease `qm exec` holds its allocation on, renewed at a third of it.
const LEASE_S: f64 = 15.0;

/// `qm exec` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ExecArgs {
    /// Cpu, e.g. 500m or 2
    #[arg(long)]
    cpu: Option<String>,
    /// Memory, e.g. 256Mi
    #[arg(long)]
    memory: Option<String>,
    /// Priority 0..=1000
    #[arg(long)]
    priority: Option<i64>,
    /// The pool
    #[arg(long)]
    pool: Option<String>,
    /// Seconds to wait for admission (default: as long as it takes)
    #[arg(long, value_name = "S")]
    wait: Option<f64>,
    /// The agent's name (default: exec-<program>-<pid>)
    #[arg(long)]
    name: Option<String>,
    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn refused(message: String) -> Failure {
    Failure { code: 1, message }
}

/// Runs `qm exec`; the exit code is CMD's.
pub(crate) fn exec(c: &Client, a: &ExecArgs) -> Result<u8, Failure> {
    let program = a.command.first().cloned().unwrap_or_default();
    let base = std::path::Path::new(&program)
        .file_name()
        .map_or_else(|| "cmd".to_owned(), |n| n.to_string_lossy().into_owned());
    let clean: String = base
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "._-".contains(ch) {
                ch
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("exec-{clean}-{}", std::process::id()));
    if let Some(w) = a.wait
        && !(w.is_finite() && w >= 0.0)
    {
        return Err(Failure {
            code: 2,
            message: format!("--wait: {w} is not a number of seconds"),
        });
    }
    let mut resources = serde_json::Map::new();
    for (k, v) in [("cpu", &a.cpu), ("memory", &a.memory)] {
        if let Some(v) = v {
            resources.insert(k.to_owned(), Value::String(v.clone()));
        }
    }
    // the allocation is on the daemon's own node: the command runs here
    let node = c.node()?.name;
    let mut body = json!({
        "agent": name,
        "resources": resources,
        "ttl_s": LEASE_S,
        "queue": true,
        "node_selector": { qm_core::NODE_LABEL: node },
    });
    if let Some(p) = a.priority {
        body["priority"] = json!(p);
    }
    if let Some(p) = &a.pool {
        body["pool"] = json!(p);
    }
    let submitted = c.allocate(&body)?;
    let id = submitted.allocation.id.clone();
    // wait for admission, renewing the lease while queued
    let deadline = a.wait.map(|w| Instant::now() + Duration::from_secs_f64(w));
    let mut state = submitted.allocation.state.clone();
    while state == "queued" {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = c.release(&id);
            return Err(refused(format!(
                "not admitted within {}s: allocation {id} is still queued",
                a.wait.unwrap_or(0.0)
            )));
        }
        let _ = c.renew(&id, LEASE_S);
        state = c.allocation(&id, Some(LEASE_S / 3.0))?.state;
    }
    if state != "granted" {
        return Err(refused(format!(
            "allocation {id} ended {state} before it was granted"
        )));
    }
    // the child, held before exec until it is confined
    let (hold_read, hold_write) =
        qm_cgroup::hold_pipe().map_err(|e| refused(format!("cannot make a pipe: {e}")))?;
    let mut cmd = Command::new(&program);
    cmd.args(&a.command[1..]);
    let opts = qm_cgroup::SpawnOptions {
        cgroup_procs: Vec::new(),
        oom_score_adj: None,
        new_session: false,
        hold: Some(hold_read),
        ..qm_cgroup::SpawnOptions::default()
    };
    let mut child = match qm_cgroup::spawn(&mut cmd, &opts) {
        Ok(child) => child,
        Err(e) => {
            let _ = c.release(&id);
            return Err(Failure {
                code: 127,
                message: format!("cannot run {program:?}: {e}"),
            });
        }
    };
    let adopt = json!({
        "name": name,
        "pid": child.id(),
        "allocation": id,
        "restart": "never",
    });
    match c.create_agent_json(&adopt) {
        Ok(_) => {}
        Err(ClientError::Unreachable { .. }) => {
            eprintln!("qm exec: the daemon went away: {program} runs unconfined");
        }
        Err(e) => eprintln!("qm exec: not confined ({e}); running anyway within the allocation"),
    }
    // let it run
    let mut w = std::fs::File::from(hold_write);
    let _ = w.write_all(b"g");
    drop(w);
    let done = Arc::new(AtomicBool::new(false));
    forward_signals(child.id(), Arc::clone(&done));
    // the renewer wakes every third of the lease, or at once when told to stop (a dropped
    // sender), so a short command does not wait out a sleep
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let renewer = {
        let c = c.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs_f64(LEASE_S / 3.0))
            {
                let _ = c.renew(&id, LEASE_S);
            }
        })
    };
    let status = child.wait();
    done.store(true, Ordering::Relaxed);
    drop(stop);
    let _ = renewer.join();
    let _ = c.release(&id);
    let status = status.map_err(|e| refused(format!("lost the child: {e}")))?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Forwards the signals a wrapper is asked to pass on to `pid`, on a thread of its own.
fn forward_signals(pid: u32, done: Arc<AtomicBool>) {
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("qm-exec-signals".to_owned())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                // SIGINT and SIGQUIT from the terminal reach the child already (it shares our
                // process group): caught so this wrapper outlives the child, not forwarded (a
                // second Ctrl-C means "force quit" to many programs); SIGTERM and SIGHUP, which
                // orchestrators send to the wrapper's pid, are passed on
                let kinds = [
                    (SignalKind::interrupt(), None),
                    (SignalKind::quit(), None),
                    (SignalKind::terminate(), Some(rustix::process::Signal::TERM)),
                    (SignalKind::hangup(), Some(rustix::process::Signal::HUP)),
                ];
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                for (kind, sig) in kinds {
                    let Ok(mut s) = signal(kind) else { continue };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while s.recv().await.is_some() {
                            let _ = tx.send(sig);
                        }
                    });
                }
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        Some(sig) = rx.recv() => {
                            if let Some(sig) = sig {
                                let _ = rustix::process::kill_process(target, sig);
                            }
                        }
                        _ = tick.tick() => {
                            if done.load(Ordering::Relaxed) {
                                return;
                            }
                        }
                    }
                }
            });
        });
}
