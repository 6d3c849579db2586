//! A full disk, for real: the data dir on a small tmpfs filled to the last byte. Writes are
//! refused with 507 `storage_full` and `Retry-After` and change nothing (not the ledger, not
//! an idempotency key); reads keep working; the daemon starts on the full disk and serves
//! reads; writes resume by themselves once space returns; nothing acknowledged is lost.
//! Needs root to mount the tmpfs (skipped with one line otherwise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::daemon::{Daemon, eventually, temp_dir};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(tag: &str, size: &str) -> Option<Self> {
        let dir = temp_dir(tag);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "qm-full"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` until it refuses another byte.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0x5a_u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0x5a_u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

const ASK: &str = r#"{"agent":"w","resources":{"cpu":"1m","memory":"1Mi"}}"#;

fn allocated(d: &Daemon) -> Value {
    d.get("/v1/node").body["allocated"].clone()
}

#[test]
fn a_full_disk_refuses_writes_changes_nothing_and_writes_resume_when_space_returns() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: mounting a tmpfs needs root");
        return;
    }
    let Some(fs) = Tmpfs::mount("full-disk", "6m") else {
        println!("skipped: cannot mount a tmpfs here");
        return;
    };
    let data = fs.0.join("data");
    let config = fs.0.join("qm.toml");
    std::fs::write(&config, "[agents]\nenabled = false\n").expect("config");
    let flags = [
        "--config",
        config.to_str().expect("utf-8"),
        "--capacity",
        "cpu=1000,memory=1000Gi",
    ];
    let d = Daemon::start(&data, &flags);
    let mut acked = Vec::new();
    for _ in 0..20 {
        let a = d.post("/v1/allocations", ASK);
        assert_eq!(a.status, 201, "{:?}", a.body);
        acked.push(a.body["id"].as_str().expect("id").to_owned());
    }
    let before = allocated(&d);
    fill(&fs.0);
    // writes: refused, 507 with Retry-After, and nothing changed
    let mut refused = 0;
    for i in 0..30 {
        let a = d.send(
            "POST",
            "/v1/allocations",
            "application/json",
            ASK.as_bytes(),
            &[("idempotency-key", &format!("k{i}"))],
        );
        match a.status {
            201 => acked.push(a.body["id"].as_str().expect("id").to_owned()),
            507 => {
                assert_eq!(a.body["code"], "storage_full", "{:?}", a.body);
                refused += 1;
            }
            other => panic!("a write on a full disk answered {other}: {:?}", a.body),
        }
    }
    assert!(
        refused >= 25,
        "only {refused} of 30 writes refused on a full disk"
    );
    // a key whose write failed has no answer to replay
    let again = d.send(
        "POST",
        "/v1/allocations",
        "application/json",
        ASK.as_bytes(),
        &[("idempotency-key", "k0")],
    );
    assert_eq!(again.status, 507, "{:?}", again.body);
    let now = allocated(&d);
    let granted = d.get("/v1/allocations?state=granted&limit=1000").body["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        granted,
        acked.len(),
        "the ledger holds exactly what was acknowledged"
    );
    if acked.len() == 20 {
        assert_eq!(now, before, "a refused write left a grant in memory");
    }
    let pool = d.post("/v1/pools", r#"{"name":"later"}"#);
    assert_eq!(pool.status, 507, "{:?}", pool.body);
    let resp = ureq::post(&format!("{}/v1/allocations", d.base))
        .config()
        .http_status_as_error(false)
        .build()
        .header("authorization", &d.bearer())
        .header("content-type", "application/json")
        .send(ASK.as_bytes())
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 507);
    assert!(
        resp.headers().get("retry-after").is_some(),
        "no Retry-After"
    );
    // reads keep working
    assert_eq!(d.get("/v1/pools").status, 200);
    assert_eq!(d.get(&format!("/v1/allocations/{}", acked[0])).status, 200);
    // the daemon starts on the full disk and serves reads, refusing writes
    d.kill9();
    let d = Daemon::start(&data, &flags);
    assert_eq!(d.get("/v1/node").status, 200);
    let granted = d.get("/v1/allocations?state=granted&limit=1000").body["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(granted, acked.len(), "nothing acknowledged is lost");
    assert_eq!(d.post("/v1/allocations", ASK).status, 507);
    // space returns: writes resume by themselves, and a key refused before is a new request
    std::fs::remove_file(fs.0.join("filler")).expect("remove filler");
    let resumed = eventually("writes to resume", 10, || {
        let a = d.send(
            "POST",
            "/v1/allocations",
            "application/json",
            ASK.as_bytes(),
            &[("idempotency-key", "k0")],
        );
        (a.status == 201).then_some(a)
    });
    acked.push(resumed.body["id"].as_str().expect("id").to_owned());
    for id in &acked {
        assert_eq!(
            d.get(&format!("/v1/allocations/{id}")).body["state"],
            "granted",
            "{id}"
        );
    }
    d.stop();
}
