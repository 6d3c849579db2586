//! `/metrics` as Prometheus reads it: the real exposition checked by `promtool check metrics`
//! (Debian's `prometheus` package; skipped with one line where promtool is absent).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::daemon::{Daemon, temp_dir};

/// `promtool check metrics` on `text`: None when promtool is not installed, else its exit
/// status and what it printed.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

#[test]
fn metrics_pass_promtool() {
    let d = Daemon::start(&temp_dir("promtool"), &["--capacity", "cpu=2,memory=1Gi"]);
    // some traffic first, so every family has samples
    let granted = d.post(
        "/v1/allocations",
        r#"{"agent":"a","resources":{"cpu":"500m","memory":"128Mi"}}"#,
    );
    assert_eq!(granted.status, 201);
    let refused = d.post(
        "/v1/allocations",
        r#"{"agent":"b","resources":{"cpu":"64"}}"#,
    );
    assert_eq!(refused.status, 409);
    let (status, text) = d.get_text("/metrics");
    assert_eq!(status, 200);
    d.stop();
    let Some((ok, said)) = promtool_check(&text) else {
        println!("skipped: promtool not installed (Debian package prometheus)");
        return;
    };
    assert!(
        ok,
        "promtool check metrics failed:\n{said}\n--- exposition ---\n{text}"
    );
    assert!(said.trim().is_empty(), "promtool lint findings:\n{said}");
}
