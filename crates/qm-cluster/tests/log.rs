//! The cluster's log on a real etcd, under a real store: the leader's store writes through it
//! (group commits from several threads, every batch acknowledged only once it is in etcd); a
//! follower's store is refused and keeps no trace; a new leader's first write finds its store
//! behind, takes every acknowledged write and is told to decide again, then goes on numbering;
//! the deposed leader's store is refused from then on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qm_cluster::testing::{Etcd, eventually};
use qm_cluster::{EtcdLog, LOG_SEQ_META, Member, MemberConfig};
use qm_store::{AllocationRow, Batch, Op, Replica, Store, StoreError};

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qm-log-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn alloc(seq: i64) -> Op {
    Op::PutAllocation(AllocationRow {
        id: format!("a{seq}"),
        seq,
        agent: format!("agent-{seq}"),
        pool: "default".to_owned(),
        node: Some("n1".to_owned()),
        state: "granted".to_owned(),
        live: true,
        ended_at_ms: None,
        body: format!("{{\"seq\":{seq}}}"),
    })
}

async fn commit(store: &Store, ops: Vec<Op>) -> Result<(), StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.commit_wait(Batch::of(ops)))
        .await
        .expect("the blocking task")
}

fn config(etcd: &Etcd, name: &str) -> MemberConfig {
    MemberConfig {
        lease_ttl_s: 2,
        refresh: Duration::from_millis(100),
        ..MemberConfig::new(vec![etcd.url.clone()], name, &format!("http://{name}"))
    }
}

fn replicated(member: &Member, d: &std::path::Path) -> Store {
    let log: Arc<dyn Replica> = Arc::new(EtcdLog::new(
        member.clone(),
        tokio::runtime::Handle::current(),
    ));
    Store::open_replicated(d, log).expect("store")
}

fn held(store: &Store) -> (usize, Option<String>) {
    let loaded = store.load().expect("load");
    (
        loaded.live_allocations.len(),
        loaded.meta.get(LOG_SEQ_META).cloned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_writes_through_the_log_and_a_new_leader_replays_every_acknowledged_write() {
    let Some(etcd) = Etcd::start("log") else {
        return;
    };
    let a = Member::join(config(&etcd, "a")).await.expect("join a");
    let b = Member::join(config(&etcd, "b")).await.expect("join b");
    let leader = eventually("a leader both see", 20, || {
        let l = a.view().leader?;
        (b.view().leader.as_deref() == Some(l.as_str())
            && [&a, &b]
                .iter()
                .any(|m| m.name() == l && m.view().leading.is_some()))
        .then_some(l)
    })
    .await;
    let (lead, follow) = if leader == "a" { (&a, &b) } else { (&b, &a) };
    let (lead_dir, follow_dir) = (dir("lead"), dir("follow"));
    let lead_store = replicated(lead, &lead_dir);

    // 200 batches from 4 tasks at once: group commits, each acknowledged once in etcd
    let mut tasks = Vec::new();
    for t in 0..4i64 {
        let store = lead_store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                commit(&store, vec![alloc(1 + t * 50 + i)])
                    .await
                    .expect("the leader's batch");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (n, seq) = held(&lead_store);
    assert_eq!(n, 200);
    let last: u64 = seq.expect("the log position").parse().unwrap();
    assert!((1..=200).contains(&last), "{last} entries for 200 batches");

    // a follower's store is refused, and keeps nothing
    let follow_store = replicated(follow, &follow_dir);
    let e = commit(&follow_store, vec![alloc(999)]).await.unwrap_err();
    assert!(matches!(e, StoreError::Replica { .. }), "{e}");
    assert_eq!(held(&follow_store).0, 0);

    // the leader stops (kill -9, a pause): the follower leads once the lease lapses
    lead.halt();
    eventually("the follower to lead", 20, || {
        follow.view().leading.map(|_| ())
    })
    .await;
    // its first write finds its store behind the log: nothing is appended, every
    // acknowledged write is taken, and it is told to decide again
    let e = commit(&follow_store, vec![alloc(201)]).await.unwrap_err();
    assert!(e.to_string().contains("caught up"), "{e}");
    assert_eq!(held(&follow_store), (200, Some(last.to_string())));
    // then its writes go through, numbered on
    commit(&follow_store, vec![alloc(201)])
        .await
        .expect("the new leader's batch");
    assert_eq!(held(&follow_store), (201, Some((last + 1).to_string())));
    // a store that was never replicated catches up ahead of time, and only once
    let plain_dir = dir("plain");
    let plain = Store::open(&plain_dir).expect("store");
    let log = EtcdLog::new(follow.clone(), tokio::runtime::Handle::current());
    assert_eq!(log.replay(&plain).await.expect("replay") as u64, last + 1);
    assert_eq!(held(&plain), (201, Some((last + 1).to_string())));
    assert_eq!(log.replay(&plain).await.expect("replay"), 0);
    drop(plain);
    let _ = std::fs::remove_dir_all(plain_dir);
    // the deposed leader's store is refused from now on (the first try also brings it up to
    // date with what the new leader wrote), and keeps no trace of its own write
    for _ in 0..2 {
        let e = commit(&lead_store, vec![alloc(500)]).await.unwrap_err();
        assert!(matches!(e, StoreError::Replica { .. }), "{e}");
    }
    let loaded = lead_store.load().expect("load");
    assert!(loaded.live_allocations.iter().all(|a| a.seq != 500));
    assert_eq!(
        loaded.live_allocations.len(),
        201,
        "caught up with the new leader's write"
    );

    follow.leave().await;
    drop((lead_store, follow_store));
    let _ = std::fs::remove_dir_all(lead_dir);
    let _ = std::fs::remove_dir_all(follow_dir);
}
