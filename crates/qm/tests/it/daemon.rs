//! Starting and stopping the real `qm` daemon for tests, and a small HTTP helper.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

static N: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty data dir under the system temp dir.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("qm-it-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Polls `f` every 50 ms until it answers, for up to `secs` seconds.
pub(crate) fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A running daemon.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) base: String,
    dir: PathBuf,
    /// The flags it was started with (a restart reuses them).
    flags: Vec<String>,
    agent: ureq::Agent,
    /// The admin token the daemon wrote to its data dir (what every test acts as unless it
    /// says otherwise).
    pub(crate) token: String,
}

/// An HTTP answer: status and JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Value,
}

impl Daemon {
    /// Starts `qm serve` on 127.0.0.1:0 with `dir` as data dir and extra flags (the node is
    /// `test-node` unless they name one).
    pub(crate) fn start(dir: &Path, flags: &[&str]) -> Self {
        let node = if flags.contains(&"--node-name") {
            &[][..]
        } else {
            &["--node-name", "test-node"][..]
        };
        // QM_BIN: another build of qm (a measurement runs the release one)
        let bin = std::env::var("QM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_qm").to_owned());
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(node)
            .arg("--data-dir")
            .arg(dir)
            .args(flags)
            .env("QM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qm serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default();
        Self {
            child,
            base: format!("http://{addr}"),
            dir: dir.to_owned(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            agent,
            token,
        }
    }

    /// The `Authorization` header value for the admin token.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A request as `token` (None: no Authorization header): method, path, JSON body.
    pub(crate) fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        macro_rules! with_auth {
            ($req:expr) => {{
                let mut req = $req;
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                req
            }};
        }
        let resp = match method {
            "GET" => with_auth!(self.agent.get(&url)).call(),
            "DELETE" => with_auth!(self.agent.delete(&url)).call(),
            "POST" | "PUT" => {
                let req = if method == "POST" {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                with_auth!(req)
                    .header("content-type", "application/json")
                    .send(body.unwrap_or("{}").as_bytes())
            }
            other => panic!("method {other}"),
        };
        Self::answer(resp)
    }

    /// A daemon whose agents live under a cgroup parent of the test's own (`qm-it-<tag>`),
    /// with the local node's `capacity` and `extra` flags.
    pub(crate) fn with_agents(tag: &str, capacity: &str, extra: &[&str]) -> Self {
        let dir = temp_dir(tag);
        let config = dir.join("qm.toml");
        std::fs::write(
            &config,
            format!("[agents]\ncgroup_parent = \"qm-it-{tag}\"\nbackoff_initial_s = 0.2\n"),
        )
        .expect("config");
        let mut flags = vec![
            "--config",
            config.to_str().expect("utf-8"),
            "--capacity",
            capacity,
        ];
        flags.extend_from_slice(extra);
        Self::start(&dir.join("data"), &flags)
    }

    /// Its data dir.
    pub(crate) fn dir_of(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Kills it with SIGKILL and waits.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM and starts it again on the same data dir with the same flags.
    pub(crate) fn restart(self) -> Self {
        let (dir, flags) = (self.dir.clone(), self.flags.clone());
        self.stop();
        Self::start_owned(&dir, &flags)
    }

    /// Kills it with SIGKILL and starts it again on the same data dir with the same flags.
    pub(crate) fn kill9_restart(self) -> Self {
        let (dir, flags) = (self.dir.clone(), self.flags.clone());
        self.kill9();
        Self::start_owned(&dir, &flags)
    }

    fn start_owned(dir: &Path, flags: &[String]) -> Self {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Self::start(dir, &flags)
    }

    /// Stops it with SIGTERM and waits for a clean exit.
    pub(crate) fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "qm serve exited with {status}");
    }

    fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut resp = resp.expect("the daemon answers");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            body,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Answer {
        Self::answer(
            self.agent
                .get(&format!("{}{path}", self.base))
                .header("authorization", &self.bearer())
                .call(),
        )
    }

    /// GETs a text body.
    pub(crate) fn get_text(&self, path: &str) -> (u16, String) {
        let mut resp = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("authorization", &self.bearer())
            .call()
            .expect("the daemon answers");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    pub(crate) fn delete(&self, path: &str) -> Answer {
        Self::answer(
            self.agent
                .delete(&format!("{}{path}", self.base))
                .header("authorization", &self.bearer())
                .call(),
        )
    }

    /// POSTs JSON text.
    pub(crate) fn post(&self, path: &str, body: &str) -> Answer {
        self.send("POST", path, "application/json", body.as_bytes(), &[])
    }

    /// Sends raw bytes with a content type and extra headers.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self.agent.post(&url),
            "PUT" => self.agent.put(&url),
            other => panic!("method {other}"),
        };
        if !ctype.is_empty() {
            req = req.header("content-type", ctype);
        }
        req = req.header("authorization", &self.bearer());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::answer(req.send(body))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
