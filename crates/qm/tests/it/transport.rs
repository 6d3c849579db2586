//! Transport security and encrypted export, through the real binary: a daemon serving HTTPS
//! with a certificate from a CA made here (rcgen) answers `qm --cacert` and nothing else; a
//! non-loopback listen without TLS is refused unless `--insecure`; `qm export --encrypt-to`
//! and `qm import --identity` round-trip the state through age, and refuse a missing or wrong
//! identity naming the flag.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use age::secrecy::ExposeSecret as _;
use serde_json::json;

use crate::daemon::{Daemon, temp_dir};

/// A CA certificate, and a server certificate it signed for `127.0.0.1` and `localhost`
/// with its key, as PEM: `(ca, cert, key)`.
pub(crate) fn certificates(name: &str) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("ca cert");
    let mut server = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("server params");
    server
        .distinguished_name
        .push(rcgen::DnType::CommonName, "qm test daemon");
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = server.signed_by(&key, &*ca).expect("server cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// `qm` with `args`, speaking to `d` with its admin token.
fn qm(d: &Daemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(args)
        .env_remove("QM_CACERT")
        .env_remove("QM_SERVER")
        .env("QM_TOKEN", &d.token)
        .output()
        .expect("run qm")
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `qm serve` with exactly these flags (no default `--listen`): its exit and stderr, or, if it
/// printed its listening line, the address and stderr after stopping it.
fn serve(dir: &Path, flags: &[&str]) -> Result<(String, String), (i32, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(["serve", "--node-name", "test-node", "--data-dir"])
        .arg(dir)
        .args(flags)
        .env("QM_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qm serve");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let started = line
        .strip_prefix("listening on ")
        .map(|a| a.trim().to_owned());
    if started.is_some() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let out = child.wait_with_output().expect("wait for qm serve");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match started {
        Some(addr) => Ok((addr, stderr)),
        None => Err((out.status.code().unwrap_or(-1), stderr)),
    }
}

/// `qm mcp` with `args` before `mcp`: the answer to `tools/call node_status` (JSON-RPC over
/// stdio, one message a line).
fn mcp_node_status(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(args)
        .arg("mcp")
        .env("QM_LOG", "error")
        .env("QM_TOKEN", &d.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start qm mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "transport-test", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "node_status", "arguments": {}}}),
    ];
    let mut called = serde_json::Value::Null;
    for message in messages {
        writeln!(stdin, "{message}").expect("write to qm mcp");
        if message["id"].is_null() {
            continue;
        }
        let line = lines.next().expect("an answer").expect("read qm mcp");
        called = serde_json::from_str(&line).expect("json-rpc");
        assert!(called["result"].is_object(), "{called}");
    }
    drop(stdin);
    let _ = child.wait();
    called
}

#[test]
fn https_needs_the_ca_that_signed_the_daemon() {
    let dir = temp_dir("tls");
    let (ca, cert, key) = certificates("qm");
    let (other_ca, _, _) = certificates("stranger");
    let files = temp_dir("tls-files");
    for (name, pem) in [
        ("ca.pem", &ca),
        ("cert.pem", &cert),
        ("key.pem", &key),
        ("other-ca.pem", &other_ca),
    ] {
        std::fs::write(files.join(name), pem).expect("write pem");
    }
    let path = |name: &str| files.join(name).display().to_string();
    let d = Daemon::start(
        &dir,
        &[
            "--tls-cert",
            &path("cert.pem"),
            "--tls-key",
            &path("key.pem"),
        ],
    );
    let port = d.base.rsplit(':').next().expect("port").to_owned();
    for host in ["127.0.0.1", "localhost"] {
        let server = format!("https://{host}:{port}");
        let (code, out, err) = text(&qm(
            &d,
            &["--server", &server, "--cacert", &path("ca.pem"), "status"],
        ));
        assert_eq!(code, 0, "{server}: {err}");
        assert!(out.contains("test-node"), "{out}");
    }
    let https = format!("https://127.0.0.1:{port}");
    // QM_CACERT as well as the flag
    let o = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(["--server", &https, "-o", "json", "nodes"])
        .env("QM_CACERT", path("ca.pem"))
        .env("QM_TOKEN", &d.token)
        .output()
        .expect("run qm");
    assert_eq!(text(&o).0, 0, "{}", text(&o).2);
    // qm mcp speaks to the daemon through the same client
    let called = mcp_node_status(&d, &["--server", &https, "--cacert", &path("ca.pem")]);
    assert_eq!(called["result"]["isError"], false, "{called}");
    assert_eq!(
        called["result"]["structuredContent"]["node"]["name"], "test-node",
        "{called}"
    );
    let called = mcp_node_status(&d, &["--server", &https]);
    assert_eq!(called["result"]["isError"], true, "{called}");
    assert!(called.to_string().contains("certificate"), "{called}");
    // Mozilla's roots, or another CA: the certificate is not trusted, exit 3, and the message
    // says what to pass
    for extra in [&[][..], &["--cacert", &path("other-ca.pem")][..]] {
        let args: Vec<&str> = ["--server", https.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .chain(["status"])
            .collect();
        let (code, _, err) = text(&qm(&d, &args));
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            err.contains("certificate") && err.contains("--cacert"),
            "{args:?}: {err}"
        );
    }
    // a CA file that is missing or not PEM is a usage error naming the flag
    for bad in [path("missing.pem"), path("key.pem")] {
        let (code, _, err) = text(&qm(&d, &["--server", &https, "--cacert", &bad, "status"]));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--cacert") && err.contains(&bad), "{err}");
    }
    // plain HTTP on the TLS port gets no API answer
    let plain = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .new_agent();
    let answer = plain
        .get(&format!("http://127.0.0.1:{port}/v1/node"))
        .call()
        .map(|mut r| (r.status().as_u16(), r.body_mut().read_to_string()));
    assert!(
        !matches!(&answer, Ok((200, Ok(body))) if body.contains("test-node")),
        "{answer:?}"
    );
    let (code, _, _) = text(&qm(&d, &["--server", &d.base, "status"]));
    assert_ne!(code, 0, "plain http:// to the TLS port");
    d.stop();
}

#[test]
fn tls_flags_and_files_are_checked_at_start() {
    let dir = temp_dir("tls-bad");
    let (_, cert, key) = certificates("qm");
    std::fs::write(dir.join("cert.pem"), cert).expect("write");
    std::fs::write(dir.join("key.pem"), key).expect("write");
    std::fs::write(dir.join("junk.pem"), "not a certificate").expect("write");
    let f = |name: &str| dir.join(name).display().to_string();
    let cases: [(Vec<String>, &str); 4] = [
        (vec!["--tls-cert".into(), f("cert.pem")], "--tls-key"),
        (vec!["--tls-key".into(), f("key.pem")], "--tls-cert"),
        (
            vec![
                "--tls-cert".into(),
                f("nope.pem"),
                "--tls-key".into(),
                f("key.pem"),
            ],
            "--tls-cert",
        ),
        (
            vec![
                "--tls-cert".into(),
                f("cert.pem"),
                "--tls-key".into(),
                f("junk.pem"),
            ],
            "--tls-key",
        ),
    ];
    for (flags, names) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend(flags.iter().map(String::as_str));
        let (code, err) = serve(&dir.join("data"), &args).expect_err("refused");
        assert_eq!(code, 1, "{flags:?}: {err}");
        assert!(err.contains(names), "{flags:?}: {err}");
    }
}

#[test]
fn a_non_loopback_listen_needs_tls_or_insecure() {
    let dir = temp_dir("insecure");
    let (code, err) = serve(&dir, &["--listen", "0.0.0.0:0"]).expect_err("refused");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("0.0.0.0:0") && err.contains("loopback") && err.contains("--insecure"),
        "{err}"
    );
    // the config file's `insecure = true` as well as the flag
    let config = dir.join("qm.toml");
    std::fs::write(&config, "listen = \"0.0.0.0:0\"\ninsecure = true\n").expect("config");
    for flags in [
        &["--listen", "0.0.0.0:0", "--insecure"][..],
        &["--config", config.to_str().expect("utf-8")][..],
    ] {
        let (addr, log) = serve(&dir, flags).expect("started");
        assert!(addr.starts_with("0.0.0.0:"), "{addr}");
        assert!(log.contains("INSECURE"), "a loud warning: {log}");
    }
}

#[test]
fn an_encrypted_export_imports_back_with_its_identity_only() {
    let d = Daemon::start(&temp_dir("sealed"), &["--capacity", "cpu=2,memory=2Gi"]);
    let files = temp_dir("sealed-files");
    let server = d.base.clone();
    let run = |args: &[&str]| {
        let full: Vec<&str> = ["--server", server.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        text(&qm(&d, &full))
    };
    let (code, _, err) = run(&["pools", "create", "sealed-pool", "--weight", "3"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "alloc",
        "request",
        "--agent",
        "a1",
        "--pool",
        "sealed-pool",
        "--cpu",
        "500m",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, before, err) = run(&["export"]);
    assert_eq!(code, 0, "{err}");
    let before: serde_json::Value = serde_json::from_str(&before).expect("json");

    let key = age::x25519::Identity::generate();
    let second = age::x25519::Identity::generate();
    let identity = files.join("key.txt");
    std::fs::write(
        &identity,
        format!(
            "# created: by the test\n# public key: {}\n{}\n",
            key.to_public(),
            key.to_string().expose_secret()
        ),
    )
    .expect("identity");
    let stranger = files.join("stranger.txt");
    std::fs::write(
        &stranger,
        format!(
            "{}\n",
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
        ),
    )
    .expect("identity");
    let sealed = files.join("state.age");
    let sealed_s = sealed.display().to_string();
    let (code, _, err) = run(&[
        "export",
        "-f",
        &sealed_s,
        "--encrypt-to",
        &second.to_public().to_string(),
        "--encrypt-to",
        &key.to_public().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read_to_string(&sealed).expect("sealed file");
    assert!(
        bytes.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{bytes}"
    );
    assert!(!bytes.contains("sealed-pool"), "{bytes}");
    let (code, _, err) = run(&["export", "--encrypt-to", "age1notarecipient"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--encrypt-to"), "{err}");

    // empty the state, then bring it back
    let empty = files.join("empty.json");
    let mut cleared = before.clone();
    cleared["pools"] = json!([]);
    cleared["allocations"] = json!([]);
    std::fs::write(&empty, cleared.to_string()).expect("write");
    let empty_s = empty.display().to_string();
    let identity_s = identity.display().to_string();
    // a plain document imports with --identity too
    let (code, _, err) = run(&["import", &empty_s, "--identity", &identity_s]);
    assert_eq!(code, 0, "{err}");
    let (_, now, _) = run(&["export"]);
    assert!(!now.contains("sealed-pool"), "{now}");

    let (code, _, err) = run(&["import", &sealed_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--identity"), "{err}");
    let (code, _, err) = run(&[
        "import",
        &sealed_s,
        "--identity",
        &stranger.display().to_string(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--identity") && err.contains("none of its keys"),
        "{err}"
    );
    let (code, _, err) = run(&["import", &sealed_s, "--identity", &identity_s]);
    assert_eq!(code, 0, "{err}");
    let (_, after, _) = run(&["export"]);
    let after: serde_json::Value = serde_json::from_str(&after).expect("json");
    for field in ["pools", "allocations", "next_seq"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    d.stop();
}
