//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven over the
//! DevTools protocol on its WebSocket (a minimal client here: the handshake, masked text
//! frames out, frames in), so a test can load a page, evaluate JavaScript in it, collect
//! console errors and failed loads, and take a screenshot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The browser binary, when installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// A headless browser with one page, killed on drop.
pub(crate) struct Browser {
    child: Child,
    profile: PathBuf,
    ws: TcpStream,
    next_id: u64,
    /// Console errors, uncaught exceptions and failed loads seen so far.
    pub(crate) errors: Vec<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let s = TcpStream::connect(addr).expect("the browser's DevTools port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(&s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    // the answer's length from its headers (the browser keeps the connection open)
    let mut r = BufReader::new(s);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).expect("the body");
    String::from_utf8_lossy(&body).into_owned()
}

impl Browser {
    /// Starts one with a blank page, or answers None (saying so) when no browser is
    /// installed, unless `QM_BROWSER=required`, when that fails the test.
    pub(crate) fn start(tag: &str) -> Option<Browser> {
        let Some(bin) = chromium() else {
            assert!(
                std::env::var("QM_BROWSER").as_deref() != Ok("required"),
                "QM_BROWSER=required but chromium is not installed"
            );
            eprintln!("skipped: chromium is not installed (Debian: chromium)");
            return None;
        };
        let profile = crate::daemon::temp_dir(&format!("chromium-{tag}"));
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(Instant::now() < deadline, "chromium did not start");
            let Some(Ok(line)) = lines.next() else {
                panic!("chromium ended before it listened");
            };
            if let Some(url) = line.split("DevTools listening on ws://").nth(1) {
                break url.split('/').next().expect("host:port").to_owned();
            }
        };
        // keep draining its stderr so it never blocks on a full pipe
        std::thread::spawn(move || for _ in lines {});
        let list: Value = serde_json::from_str(&http_get(&addr, "/json/list")).expect("targets");
        let page = list
            .as_array()
            .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page")
            .to_owned();
        let path = page
            .split_once(&addr)
            .map(|(_, p)| p.to_owned())
            .expect("a path");
        let mut ws = TcpStream::connect(&addr).expect("connect");
        write!(
            ws,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("handshake");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            ws.read_exact(&mut byte).expect("handshake answer");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        ws.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut b = Browser {
            child,
            profile,
            ws,
            next_id: 0,
            errors: Vec::new(),
        };
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(m, json!({}));
        }
        Some(b)
    }

    fn send(&mut self, text: &str) {
        let data = text.as_bytes();
        let mut frame = vec![0x81u8];
        match data.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // a zero mask: masked as the protocol wants, the payload unchanged
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(data);
        self.ws.write_all(&frame).expect("send");
    }

    fn receive(&mut self) -> Value {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.ws
                .read_exact(&mut h)
                .expect("a frame from the browser");
            let fin = h[0] & 0x80 != 0;
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.ws.read_exact(&mut l).expect("length");
                    u64::from(u16::from_be_bytes(l))
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.ws.read_exact(&mut l).expect("length");
                    u64::from_be_bytes(l)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).expect("a frame that fits")];
            self.ws.read_exact(&mut payload).expect("payload");
            message.extend_from_slice(&payload);
            if fin {
                break;
            }
        }
        serde_json::from_slice(&message).unwrap_or(Value::Null)
    }

    /// Calls `method`; answers its result (events seen meanwhile are collected).
    pub(crate) fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let m = self.receive();
            if m["id"] == id {
                assert!(m["error"].is_null(), "{method}: {}", m["error"]);
                return m["result"].clone();
            }
            self.note(&m);
        }
    }

    fn note(&mut self, m: &Value) {
        match m["method"].as_str() {
            Some("Runtime.exceptionThrown") => self
                .errors
                .push(format!("exception: {}", m["params"]["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if m["params"]["type"] == "error" => {
                self.errors
                    .push(format!("console.error: {}", m["params"]["args"]));
            }
            Some("Log.entryAdded") if m["params"]["entry"]["level"] == "error" => {
                self.errors
                    .push(format!("log: {}", m["params"]["entry"]["text"]));
            }
            _ => {}
        }
    }

    /// Loads `url` and waits for its load event.
    pub(crate) fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "{url} did not load");
            let m = self.receive();
            if m["method"] == "Page.loadEventFired" {
                return;
            }
            self.note(&m);
        }
    }

    /// The value of `expression` in the page (promises awaited).
    pub(crate) fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits (up to `secs`) until `expression` is truthy in the page; its value.
    pub(crate) fn wait_for(&mut self, what: &str, secs: u64, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(expression);
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the page at `path`.
    pub(crate) fn screenshot(&mut self, path: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64(r["data"].as_str().expect("image data"));
        std::fs::write(path, png).expect("write the screenshot");
    }
}

/// Decodes standard base64 (what the protocol sends images in).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
