//! Store tests on real SQLite files in temp dirs: durability across reopening, all-or-nothing
//! batches, group commit under concurrency, a failing batch that spares its group, filters and
//! pagination.

use std::sync::Arc;
use std::thread;

use super::*;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qm-store-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn alloc(seq: i64, agent: &str, state: &str) -> AllocationRow {
    AllocationRow {
        id: format!("id-{seq}"),
        seq,
        agent: agent.to_owned(),
        pool: "default".to_owned(),
        node: Some("n".to_owned()),
        state: state.to_owned(),
        live: matches!(state, "queued" | "granted"),
        ended_at_ms: (!matches!(state, "queued" | "granted")).then_some(seq * 10),
        body: format!("{{\"seq\":{seq}}}"),
    }
}

fn batch(ops: Vec<Op>) -> Batch {
    Batch::of(ops)
}

#[test]
fn batches_are_durable_across_reopening() {
    let d = dir("reopen");
    let store = Store::open(&d).unwrap();
    store
        .commit_wait(batch(vec![
            Op::PutAllocation(alloc(1, "a", "granted")),
            Op::PutAllocation(alloc(2, "b", "released")),
            Op::PutNode {
                name: "n".into(),
                body: "{}".into(),
            },
            Op::PutPool {
                name: "p".into(),
                body: "{\"w\":1}".into(),
            },
            Op::PutMeta {
                key: "next_seq".into(),
                value: "3".into(),
            },
            Op::PutIdempotent {
                key: "k".into(),
                body: "{}".into(),
                at_ms: 5,
            },
        ]))
        .unwrap();
    store.close().unwrap();
    let store = Store::open(&d).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.live_allocations, vec![alloc(1, "a", "granted")]);
    assert_eq!(loaded.nodes, vec![("n".to_owned(), "{}".to_owned())]);
    assert_eq!(loaded.pools.len(), 1);
    assert_eq!(loaded.meta.get("next_seq").map(String::as_str), Some("3"));
    assert_eq!(
        store.allocation(2).unwrap(),
        Some(alloc(2, "b", "released"))
    );
    assert_eq!(store.idempotent("k").unwrap().as_deref(), Some("{}"));
    assert_eq!(store.idempotent("nope").unwrap(), None);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_batch_is_all_or_nothing_and_spares_its_group() {
    let d = dir("atomic");
    let store = Store::open(&d).unwrap();
    store
        .commit_wait(batch(vec![Op::PutAllocation(alloc(1, "a", "granted"))]))
        .unwrap();
    // Queue three batches at once; the middle one breaks a CHECK constraint.
    let mut clash = alloc(9, "x", "granted");
    clash.state = String::new();
    let clash = Op::PutAllocation(clash);
    let (tx, rx) = mpsc::channel();
    for (i, ops) in [
        vec![Op::PutAllocation(alloc(2, "b", "granted"))],
        vec![Op::PutAllocation(alloc(3, "c", "granted")), clash],
        vec![Op::PutAllocation(alloc(4, "d", "granted"))],
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        store.commit(
            batch(ops),
            Box::new(move |r| tx.send((i, r.is_ok())).unwrap()),
        );
    }
    let mut results: Vec<(usize, bool)> = (0..3).map(|_| rx.recv().unwrap()).collect();
    results.sort_unstable();
    assert_eq!(results, [(0, true), (1, false), (2, true)]);
    let live: Vec<i64> = store
        .load()
        .unwrap()
        .live_allocations
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(live, [1, 2, 4], "the failing batch left nothing behind");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn concurrent_commits_share_transactions() {
    let d = dir("group");
    let store = Store::open(&d).unwrap();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..64 {
                    let seq = t * 1000 + i;
                    store
                        .commit_wait(batch(vec![Op::PutAllocation(alloc(seq, "a", "granted"))]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.batches, 1024);
    assert!(stats.transactions < stats.batches, "no batching: {stats:?}");
    assert_eq!(store.load().unwrap().live_allocations.len(), 1024);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn filters_and_pages() {
    let d = dir("list");
    let store = Store::open(&d).unwrap();
    let ops = (1..=10)
        .map(|s| Op::PutAllocation(alloc(s, if s % 2 == 0 { "even" } else { "odd" }, "granted")))
        .collect();
    store.commit_wait(batch(ops)).unwrap();
    let f = AllocationFilter {
        agent: Some("even".into()),
        ..AllocationFilter::default()
    };
    let seqs = |rows: Vec<AllocationRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.allocations(&f, None, 3).unwrap()), [2, 4, 6]);
    assert_eq!(seqs(store.allocations(&f, Some(6), 3).unwrap()), [8, 10]);
    let none = AllocationFilter {
        state: Some("released".into()),
        ..AllocationFilter::default()
    };
    assert!(store.allocations(&none, None, 10).unwrap().is_empty());
    // Replace the whole state, then prune what ended long ago.
    store
        .commit_wait(batch(vec![
            Op::ClearState,
            Op::PutAllocation(alloc(20, "x", "released")),
            Op::PutAllocation(alloc(30, "y", "released")),
            Op::Prune { before_ms: 250 },
        ]))
        .unwrap();
    assert_eq!(
        seqs(
            store
                .allocations(&AllocationFilter::default(), None, 10)
                .unwrap()
        ),
        [30]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn errors_name_the_path() {
    let err = Store::open(Path::new("/proc/qm-cannot-be-here")).unwrap_err();
    assert!(err.to_string().contains("/proc/qm-cannot-be-here"), "{err}");
}

#[test]
fn agents_and_fleets_survive_a_reopen_and_ended_agents_are_pruned() {
    let dir = dir("agents");
    let store = Store::open(&dir).unwrap();
    let mut b = Batch::default();
    b.push(Op::PutAgent {
        id: "a".into(),
        live: true,
        ended_at_ms: None,
        body: "{\"pid\":1}".into(),
    });
    b.push(Op::PutAgent {
        id: "b".into(),
        live: false,
        ended_at_ms: Some(100),
        body: "{}".into(),
    });
    b.push(Op::PutFleet {
        name: "f".into(),
        body: "{\"replicas\":2}".into(),
    });
    store.commit_wait(b).unwrap();
    drop(store);
    let store = Store::open(&dir).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(
        loaded.agents,
        vec![
            ("a".to_owned(), true, "{\"pid\":1}".to_owned()),
            ("b".to_owned(), false, "{}".to_owned())
        ]
    );
    assert_eq!(
        loaded.fleets,
        vec![("f".to_owned(), "{\"replicas\":2}".to_owned())]
    );
    let mut b = Batch::default();
    b.push(Op::Prune { before_ms: 200 });
    b.push(Op::DeleteFleet { name: "f".into() });
    store.commit_wait(b).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.agents.len(), 1, "the ended agent was pruned");
    assert!(loaded.fleets.is_empty());
}

fn entry(n: i64) -> Op {
    Op::Audit {
        at_ms: 1_000 + n,
        body: format!("{{\"n\":{n}}}"),
    }
}

#[test]
fn the_audit_chain_links_entries_and_a_failed_batch_leaves_no_link() {
    let d = dir("audit");
    let store = Store::open(&d).unwrap();
    store
        .commit_wait(batch(vec![
            Op::PutAllocation(alloc(1, "a", "granted")),
            entry(1),
        ]))
        .unwrap();
    // three batches at once, the middle one failing: its entry is not in the chain and the
    // next entry links to the one before it
    let mut clash = alloc(9, "x", "granted");
    clash.state = String::new();
    let (tx, rx) = mpsc::channel();
    for ops in [
        vec![entry(2)],
        vec![entry(3), Op::PutAllocation(clash)],
        vec![entry(4)],
    ] {
        let tx = tx.clone();
        store.commit(batch(ops), Box::new(move |r| tx.send(r.is_ok()).unwrap()));
    }
    let oks: Vec<bool> = (0..3).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(oks, [true, false, true]);
    let rows = store.audit(0, 100).unwrap();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(bodies, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":4}"#]);
    assert_eq!(rows[0].prev, audit::GENESIS);
    for w in rows.windows(2) {
        assert_eq!(w[1].prev, w[0].hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    assert_eq!(store.audit(2, 100).unwrap().len(), 1, "after seq 2");
    store.close().unwrap();
    // reopened, the chain goes on from its head
    let store = Store::open(&d).unwrap();
    store.commit_wait(batch(vec![entry(5)])).unwrap();
    store.close().unwrap();
    let v = audit::verify(&d).unwrap();
    assert_eq!((v.entries, v.head_seq), (4, 4));
    // an edited body, and a removed tail, are found offline
    let conn = Connection::open(d.join("qm.db")).unwrap();
    conn.execute("UPDATE audit SET body = '{\"n\":22}' WHERE seq = 2", [])
        .unwrap();
    let e = audit::verify(&d).unwrap_err().to_string();
    assert_eq!(
        e,
        "audit entry 2 does not verify: its content does not match its hash (it was edited)"
    );
    conn.execute("UPDATE audit SET body = '{\"n\":2}' WHERE seq = 2", [])
        .unwrap();
    assert!(audit::verify(&d).is_ok());
    conn.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    let e = audit::verify(&d).unwrap_err().to_string();
    assert!(
        e.starts_with("audit entry 4 does not verify: the log ends at entry 3"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// A replica that keeps what it is given, refuses while told to, or says the store is behind
/// by what `behind` holds.
#[derive(Debug, Default)]
struct Recorder {
    appended: std::sync::Mutex<Vec<Vec<Op>>>,
    refuse: std::sync::atomic::AtomicBool,
    behind: std::sync::Mutex<Vec<Op>>,
}

impl Replica for Recorder {
    fn append(&self, ops: &[Op]) -> Result<Vec<Op>, ReplicaError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ReplicaError::Refused("not the leader".to_owned()));
        }
        let entries = std::mem::take(&mut *self.behind.lock().unwrap());
        if !entries.is_empty() {
            return Err(ReplicaError::Behind { entries });
        }
        let mut appended = self.appended.lock().unwrap();
        appended.push(ops.to_vec());
        Ok(vec![Op::PutMeta {
            key: "log".into(),
            value: appended.len().to_string(),
        }])
    }
}

#[test]
fn a_replicated_store_writes_the_replica_first_and_nothing_it_refuses() {
    let d = dir("replica");
    let replica = Arc::new(Recorder::default());
    let store = Store::open_replicated(&d, Arc::clone(&replica) as Arc<dyn Replica>).unwrap();
    let first = vec![
        Op::PutNode {
            name: "n".into(),
            body: "{}".into(),
        },
        entry(1),
        Op::PutAllocation(alloc(1, "a", "granted")),
    ];
    store.commit_wait(batch(first.clone())).unwrap();
    // the replica got the batch's changes in order, the member's own audit entry aside
    assert_eq!(
        *replica.appended.lock().unwrap(),
        vec![vec![first[0].clone(), first[2].clone()]]
    );
    // refused there: an error that says so, and no trace here
    replica
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = store
        .commit_wait(batch(vec![Op::PutAllocation(alloc(2, "b", "granted"))]))
        .unwrap_err();
    assert!(matches!(e, StoreError::Replica { .. }), "{e}");
    assert!(e.to_string().contains("not the leader"), "{e}");
    let loaded = store.load().unwrap();
    assert_eq!(loaded.live_allocations.len(), 1);
    assert_eq!(loaded.live_allocations[0].seq, 1);
    // what the replica answered was written with the batch
    assert_eq!(loaded.meta.get("log").map(String::as_str), Some("1"));
    // an entry replayed from the log is applied here only, even while the replica refuses
    store
        .commit_wait(Batch {
            ops: vec![Op::PutAllocation(alloc(3, "c", "granted"))],
            from_log: true,
        })
        .unwrap();
    assert_eq!(store.load().unwrap().live_allocations.len(), 2);
    assert_eq!(replica.appended.lock().unwrap().len(), 1);
    // behind the log: the group is dropped, the log's changes taken, and the caller told
    replica
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    *replica.behind.lock().unwrap() = vec![
        Op::PutAllocation(alloc(4, "d", "granted")),
        Op::PutMeta {
            key: "log".into(),
            value: "7".into(),
        },
    ];
    let e = store
        .commit_wait(batch(vec![Op::PutAllocation(alloc(5, "e", "granted"))]))
        .unwrap_err();
    assert!(e.to_string().contains("caught up"), "{e}");
    let loaded = store.load().unwrap();
    let seqs: Vec<i64> = loaded.live_allocations.iter().map(|a| a.seq).collect();
    assert_eq!(
        seqs,
        [1, 3, 4],
        "the log's change taken, the stale group dropped"
    );
    assert_eq!(loaded.meta.get("log").map(String::as_str), Some("7"));
    // and the next try goes through
    store
        .commit_wait(batch(vec![Op::PutAllocation(alloc(5, "e", "granted"))]))
        .unwrap();
    assert_eq!(store.load().unwrap().live_allocations.len(), 4);
}

/// A replica whose first append waits to be let go, then says the store is behind once.
#[derive(Debug)]
struct Gated {
    gate: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    behind_once: std::sync::atomic::AtomicBool,
}

impl Replica for Gated {
    fn append(&self, _: &[Op]) -> Result<Vec<Op>, ReplicaError> {
        if let Some(rx) = self.gate.lock().unwrap().take() {
            let _ = rx.recv();
            return Ok(Vec::new());
        }
        if self
            .behind_once
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(ReplicaError::Behind {
                entries: vec![Op::PutAllocation(alloc(100, "from-log", "granted"))],
            });
        }
        Ok(Vec::new())
    }
}

#[test]
fn a_group_the_log_finds_behind_fails_whole_never_batch_by_batch() {
    let d = dir("behind-group");
    let (open, gate) = std::sync::mpsc::channel();
    let replica = Arc::new(Gated {
        gate: std::sync::Mutex::new(Some(gate)),
        behind_once: std::sync::atomic::AtomicBool::new(true),
    });
    let store = Store::open_replicated(&d, replica as Arc<dyn Replica>).unwrap();
    // the first batch holds the writer inside the replica ...
    let first = {
        let s = store.clone();
        thread::spawn(move || {
            s.commit_wait(batch(vec![Op::PutAllocation(alloc(1, "a", "granted"))]))
        })
    };
    thread::sleep(std::time::Duration::from_millis(100));
    // ... while two more queue up: they go as one group, which the log finds behind
    let queued: Vec<_> = [2, 3]
        .into_iter()
        .map(|seq| {
            let s = store.clone();
            thread::spawn(move || {
                s.commit_wait(batch(vec![Op::PutAllocation(alloc(seq, "b", "granted"))]))
            })
        })
        .collect();
    thread::sleep(std::time::Duration::from_millis(100));
    open.send(()).unwrap();
    first.join().unwrap().unwrap();
    for q in queued {
        let e = q.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("caught up"), "{e}");
    }
    let seqs: Vec<i64> = store
        .load()
        .unwrap()
        .live_allocations
        .iter()
        .map(|a| a.seq)
        .collect();
    assert_eq!(
        seqs,
        [1, 100],
        "the log's change taken, neither stale batch"
    );
}

/// A replica whose first append waits to be let go; every later one is refused.
#[derive(Debug)]
struct GatedThenRefusing {
    gate: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    appended: std::sync::Mutex<Vec<Vec<Op>>>,
}

impl Replica for GatedThenRefusing {
    fn append(&self, ops: &[Op]) -> Result<Vec<Op>, ReplicaError> {
        if let Some(rx) = self.gate.lock().unwrap().take() {
            let _ = rx.recv();
            self.appended.lock().unwrap().push(ops.to_vec());
            return Ok(Vec::new());
        }
        Err(ReplicaError::Refused("not the leader".to_owned()))
    }
}

fn agent_op(id: &str) -> Op {
    Op::PutAgent {
        id: id.into(),
        live: true,
        ended_at_ms: None,
        body: format!("{{\"id\":\"{id}\"}}"),
    }
}

#[test]
fn a_members_own_agents_are_written_without_the_log_even_beside_a_refused_change() {
    let d = dir("local-ops");
    let (open, gate) = std::sync::mpsc::channel();
    let replica = Arc::new(GatedThenRefusing {
        gate: std::sync::Mutex::new(Some(gate)),
        appended: std::sync::Mutex::default(),
    });
    let store = Store::open_replicated(&d, Arc::clone(&replica) as Arc<dyn Replica>).unwrap();
    // the first batch holds the writer inside the replica; its agent is not passed on
    let first = {
        let s = store.clone();
        thread::spawn(move || {
            s.commit_wait(batch(vec![
                Op::PutAllocation(alloc(1, "a", "granted")),
                agent_op("a"),
            ]))
        })
    };
    thread::sleep(std::time::Duration::from_millis(100));
    // a ledger change and an agent queue up as one group, which the log refuses: the
    // agent is written alone, the ledger change fails
    let ledger = {
        let s = store.clone();
        thread::spawn(move || {
            s.commit_wait(batch(vec![Op::PutAllocation(alloc(2, "b", "granted"))]))
        })
    };
    thread::sleep(std::time::Duration::from_millis(50));
    let agent = {
        let s = store.clone();
        thread::spawn(move || s.commit_wait(batch(vec![agent_op("b")])))
    };
    thread::sleep(std::time::Duration::from_millis(100));
    open.send(()).unwrap();
    first.join().unwrap().unwrap();
    let e = ledger.join().unwrap().unwrap_err();
    assert!(e.to_string().contains("not the leader"), "{e}");
    agent.join().unwrap().unwrap();
    // a member that does not lead still records its agents, alone too
    store.commit_wait(batch(vec![agent_op("c")])).unwrap();
    assert_eq!(
        *replica.appended.lock().unwrap(),
        vec![vec![Op::PutAllocation(alloc(1, "a", "granted"))]],
        "only the ledger's change went to the log"
    );
    let loaded = store.load().unwrap();
    let seqs: Vec<i64> = loaded.live_allocations.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, [1]);
    let ids: Vec<&str> = loaded.agents.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}
