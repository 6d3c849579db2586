//! A real etcd for tests (this crate's and the daemon's): a single-node etcd in a temp dir on
//! free ports, killed and its dir removed on drop, and an async `eventually`. Public so the
//! `qm` binary's cluster tests start theirs the same way; nothing in the daemon uses it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A single-node etcd in a temp dir on free ports, killed and removed on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    /// Its client URL.
    pub url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether `etcd` is installed; when not, says so (and fails the test under
/// `QM_ETCD=required`).
fn installed() -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("QM_ETCD").as_deref() != Ok("required"),
            "QM_ETCD=required but etcd is not installed"
        );
        eprintln!("skipped: etcd is not installed (Debian: etcd-server)");
    }
    found
}

impl Etcd {
    /// Starts one, or answers None (saying so) when `etcd` is not installed, unless
    /// `QM_ETCD=required`, when that fails the test.
    pub fn start(tag: &str) -> Option<Etcd> {
        if !installed() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("qm-etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "e1", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e1={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { child, dir, url };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(etcd)
    }
}

/// An etcd of several members (each in its own temp dir, on free ports), for the chaos
/// tests: any member may be killed and the rest keep a quorum.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<(Option<Child>, PathBuf)>,
    /// The client URLs, one per member.
    pub urls: Vec<String>,
}

impl EtcdCluster {
    /// Starts `n` members, or answers None (saying so) when `etcd` is not installed, unless
    /// `QM_ETCD=required`, when that fails the test.
    pub fn start(tag: &str, n: usize) -> Option<EtcdCluster> {
        if !installed() {
            return None;
        }
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("qm-{tag}-{}", std::process::id());
        let mut members = Vec::new();
        let mut urls = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let dir =
                std::env::temp_dir().join(format!("qm-etcd-{tag}-{i}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(&dir)
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", &token])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd");
            members.push((Some(child), dir));
            urls.push(url);
        }
        let cluster = EtcdCluster { members, urls };
        let deadline = Instant::now() + Duration::from_secs(30);
        for (client, _) in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *client)).is_err() {
                assert!(Instant::now() < deadline, "etcd did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(cluster)
    }

    /// The client URLs, comma-separated (as `--etcd` takes them).
    pub fn endpoints(&self) -> String {
        self.urls.join(",")
    }

    /// The client URLs of the members not killed.
    pub fn live_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .zip(&self.urls)
            .filter(|(m, _)| m.0.is_some())
            .map(|(_, u)| u.clone())
            .collect()
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members.get_mut(i).and_then(|m| m.0.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for (child, dir) in &mut self.members {
            if let Some(c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What [`check_ledger`] found: the cluster's ledger as its log in etcd says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerCheck {
    /// Log entries read.
    pub entries: u64,
    /// Nodes, and granted allocations.
    pub nodes: usize,
    pub granted: usize,
    /// Every allocation's last state, by id.
    pub states: std::collections::BTreeMap<String, String>,
}

/// The invariant checker: replays the cluster's log under `prefix` from etcd at `endpoints`
/// (every entry the leaders committed, in order) and checks that no node is over-committed:
/// for every node and every resource it names, what its granted allocations hold is at most
/// its allocatable. Answers what it found, or the first violation.
pub async fn check_ledger(endpoints: &[String], prefix: &str) -> Result<LedgerCheck, String> {
    use std::collections::BTreeMap;
    let mut client = etcd_client::Client::connect(endpoints, None)
        .await
        .map_err(|e| e.to_string())?;
    let log = format!("{}/log/", prefix.trim_end_matches('/'));
    let resp = client
        .get(
            log.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut nodes: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut allocs: BTreeMap<i64, qm_store::AllocationRow> = BTreeMap::new();
    let mut check = LedgerCheck::default();
    for kv in resp.kvs() {
        let ops: Vec<qm_store::Op> =
            serde_json::from_slice(kv.value()).map_err(|e| format!("a log entry: {e}"))?;
        check.entries += 1;
        for op in ops {
            match op {
                qm_store::Op::PutNode { name, body } => {
                    let v: serde_json::Value =
                        serde_json::from_str(&body).map_err(|e| format!("node {name}: {e}"))?;
                    nodes.insert(name, v);
                }
                qm_store::Op::DeleteNode { name } => {
                    nodes.remove(&name);
                }
                qm_store::Op::PutAllocation(row) => {
                    allocs.insert(row.seq, row);
                }
                qm_store::Op::ClearState => {
                    nodes.clear();
                    allocs.clear();
                }
                _ => {}
            }
        }
    }
    let units = |r: &str| match r {
        "cpu" => qm_core::quantity::Unit::Millicores,
        "memory" | "ephemeral-storage" => qm_core::quantity::Unit::Bytes,
        _ => qm_core::quantity::Unit::Count,
    };
    let amount = |r: &str, v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| qm_core::quantity::parse(units(r), s).ok())
            .unwrap_or(0)
    };
    let mut held: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in allocs.values() {
        check.states.insert(row.id.clone(), row.state.clone());
        if row.state != "granted" {
            continue;
        }
        check.granted += 1;
        let Some(node) = &row.node else {
            return Err(format!("allocation {} is granted on no node", row.id));
        };
        if !nodes.contains_key(node) {
            return Err(format!(
                "allocation {} is granted on unknown node {node}",
                row.id
            ));
        }
        let body: serde_json::Value =
            serde_json::from_str(&row.body).map_err(|e| format!("allocation {}: {e}", row.id))?;
        if let Some(res) = body["resources"].as_object() {
            for (r, v) in res {
                *held.entry((node.clone(), r.clone())).or_default() += amount(r, v);
            }
        }
    }
    check.nodes = nodes.len();
    for ((node, r), total) in &held {
        let allocatable = amount(r, &nodes[node]["allocatable"][r]);
        if *total > allocatable {
            return Err(format!(
                "node {node} is over-committed in {r}: {total} granted of {allocatable}"
            ));
        }
    }
    Ok(check)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (up to `secs`) until `f` answers, checking every 50 ms; panics naming `what` when it
/// never does.
pub async fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
