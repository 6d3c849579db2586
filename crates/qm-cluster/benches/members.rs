//! etcd's load from a cluster of N members, simulated: N `Member`s in this process against a
//! real single-node etcd, each keeping its 10 s lease (a keep-alive every 3.3 s), following the
//! view (a watch on the members, the election observed) and campaigning, and running its
//! placement reconciler's etcd side as the daemon does: a watch on what is placed on its node
//! and on stop requests, a read of both when they change and every 10 s. Over a window it reads
//! etcd's own counters (`/metrics`): requests by method, raft proposals, etcd's cpu and memory.
//!
//!   cargo bench -p qm-cluster --bench members [-- MEMBERS SECONDS]     (defaults 1000 and 20)
//!
//! Needs `etcd` on the PATH (Debian: etcd-server).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use qm_cluster::testing::Etcd;
use qm_cluster::{Member, MemberConfig};

/// etcd's `/metrics`, summed by series name and `grpc_method` label.
fn scrape(url: &str) -> BTreeMap<String, f64> {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("etcd");
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let method = series
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let key = match method {
            Some(m) => format!("{name}/{m}"),
            None => name.to_owned(),
        };
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(etcd) = Etcd::start("bench-members") else {
        eprintln!("etcd is not installed: nothing measured");
        return;
    };
    let t0 = Instant::now();
    let members: Vec<Member> = rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            let joins = chunk.iter().map(|i| {
                let config = MemberConfig::new(
                    vec![etcd.url.clone()],
                    &format!("m{i:04}"),
                    &format!("http://10.0.{}.{}:7070", i / 250, i % 250),
                );
                Member::join(config)
            });
            for m in futures_join(joins).await {
                out.push(m.expect("join"));
            }
        }
        out
    });
    let joined = t0.elapsed().as_secs_f64();
    // each member's placement reconciler, as far as etcd sees it
    let _reconcilers: Vec<_> = rt.block_on(async {
        members
            .iter()
            .map(|m| {
                let m = m.clone();
                tokio::spawn(async move {
                    let node = m.name().to_owned();
                    let changes = m.watch_changes(&[&format!("agents/{node}/"), "agent-stop/"]);
                    let mut last: Option<Instant> = None;
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                        if changes.take() || due {
                            let _ = m.placements_on(&node).await;
                            let _ = m.stop_requests().await;
                            last = Some(Instant::now());
                        }
                    }
                })
            })
            .collect()
    });
    // settle: everyone sees everyone and the leader
    let deadline = Instant::now() + Duration::from_secs(60);
    while !members
        .iter()
        .all(|m| m.view().members.len() == n && m.view().leader.is_some())
    {
        assert!(Instant::now() < deadline, "the view did not settle");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = scrape(&etcd.url);
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = scrape(&etcd.url);
    let w = w0.elapsed().as_secs_f64();
    let rate = |k: &str| {
        (after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)) / w
    };
    println!(
        "{n} members on one etcd (lease 10 s, placements watched), {seconds} s window; joined in {joined:.1} s"
    );
    for (what, key) in [
        ("range reads/s", "grpc_server_handled_total/Range"),
        (
            "lease keep-alives/s",
            "grpc_server_msg_received_total/LeaseKeepAlive",
        ),
        ("watch streams opened/s", "grpc_server_started_total/Watch"),
        ("txns/s", "grpc_server_handled_total/Txn"),
        ("puts/s", "grpc_server_handled_total/Put"),
        (
            "raft proposals committed/s",
            "etcd_server_proposals_committed_total",
        ),
    ] {
        println!("  {what:<28} {:>10.1}", rate(key));
    }
    println!(
        "  etcd cpu                     {:>9.1}% of a core",
        rate("process_cpu_seconds_total") * 100.0
    );
    println!(
        "  etcd resident memory         {:>7.0} MiB",
        after
            .get("process_resident_memory_bytes")
            .copied()
            .unwrap_or(0.0)
            / 1048576.0
    );
    rt.block_on(async {
        for m in &members {
            m.halt();
        }
    });
}

/// Awaits every future, in order (a tiny join_all: the bench needs no more).
async fn futures_join<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
