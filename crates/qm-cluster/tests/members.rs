//! Membership and election against a real etcd (Debian's `etcd-server`), three members in one
//! process: they agree on one leader; the leader's fenced write lands and a follower's does
//! not; a leader that stops keeping its lease (a crash or a pause) is replaced once the lease
//! lapses, its record goes, and its old leadership can no longer write; a member that finds
//! its lease gone runs its hook and rejoins.
//!
//! Needs `etcd` on the PATH; skipped (saying so) without it unless `QM_ETCD=required`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::TxnOp;
use qm_cluster::testing::{Etcd, eventually};
use qm_cluster::{ClusterError, Member, MemberConfig};

fn config(etcd: &Etcd, name: &str) -> MemberConfig {
    MemberConfig {
        lease_ttl_s: 2,
        refresh: Duration::from_millis(100),
        ..MemberConfig::new(vec![etcd.url.clone()], name, &format!("http://{name}:7070"))
    }
}

/// The leader all of `members` agree on, once they do and see `n` members.
fn agreed(members: &[&Member], n: usize) -> Option<String> {
    let first = members.first()?.view();
    let leader = first.leader.clone()?;
    members
        .iter()
        .all(|m| {
            let v = m.view();
            v.leader.as_deref() == Some(leader.as_str()) && v.members.len() == n
        })
        .then_some(leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_agree_on_a_leader_and_a_halted_leader_is_replaced_and_fenced_off() {
    let Some(etcd) = Etcd::start("elect") else {
        return;
    };
    let mut members = Vec::new();
    for name in ["m1", "m2", "m3"] {
        members.push(Member::join(config(&etcd, name)).await.expect("join"));
    }
    let all: Vec<&Member> = members.iter().collect();
    let leader = eventually("one agreed leader", 20, || agreed(&all, 3)).await;
    let lead = members.iter().find(|m| m.name() == leader).unwrap();
    let follower = members.iter().find(|m| m.name() != leader).unwrap();
    // only the leader writes
    lead.fenced(vec![TxnOp::put("/qm/test/k", "1", None)])
        .await
        .expect("the leader's write");
    assert!(matches!(
        follower
            .fenced(vec![TxnOp::put("/qm/test/k", "2", None)])
            .await,
        Err(ClusterError::NotLeader)
    ));
    let doc = follower.doc();
    assert_eq!(doc.store, "etcd");
    assert_eq!(doc.leader.as_deref(), Some(leader.as_str()));
    assert_eq!(doc.members.len(), 3);
    assert_eq!(doc.members.iter().filter(|m| m.leader).count(), 1);
    // the leases' expiry is read once someone asks (the next refresh)
    eventually("each member's lease expiry", 10, || {
        follower
            .doc()
            .members
            .iter()
            .all(|m| m.lease_expires_at.is_some())
            .then_some(())
    })
    .await;

    // the leader stops keeping its lease (kill -9, SIGSTOP): a new leader once it lapses
    let old_rev = lead.view().leading.expect("a fencing token");
    lead.halt();
    let halted = Instant::now();
    let rest: Vec<&Member> = members.iter().filter(|m| m.name() != leader).collect();
    let next = eventually("a new leader among the rest", 20, || agreed(&rest, 2)).await;
    assert_ne!(next, leader);
    eprintln!(
        "leader halted to a new leader agreed: {:.1} s (lease 2 s)",
        halted.elapsed().as_secs_f64()
    );
    let new_lead = members.iter().find(|m| m.name() == next).unwrap();
    new_lead
        .fenced(vec![TxnOp::put("/qm/test/k", "3", None)])
        .await
        .expect("the new leader's write");
    // the deposed leader's token no longer writes
    assert!(matches!(
        lead.fenced_at(old_rev, vec![TxnOp::put("/qm/test/k", "stale", None)])
            .await,
        Err(ClusterError::NotLeader)
    ));
    for m in &members {
        m.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_is_one_member() {
    let Some(etcd) = Etcd::start("one-name") else {
        return;
    };
    let a = Member::join(config(&etcd, "same")).await.expect("join");
    let e = Member::join(config(&etcd, "same")).await.unwrap_err();
    assert!(e.to_string().contains("already in the cluster"), "{e}");
    // once the first is gone (its lease lapsed), the name is free again
    a.halt();
    let b = Member::join(config(&etcd, "same"))
        .await
        .expect("the name free once the lease lapsed");
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_finds_its_lease_gone_runs_its_hook_and_rejoins() {
    let Some(etcd) = Etcd::start("rejoin") else {
        return;
    };
    let m = Member::join(config(&etcd, "solo")).await.expect("join");
    let lost = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&lost);
    m.on_lost(move || {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    eventually("itself in its view", 10, || {
        m.view().members.contains_key("solo").then_some(())
    })
    .await;
    // the lease goes behind its back (as when it was paused past it)
    let lease = m.view().lease.expect("a lease");
    let mut other = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .expect("client");
    other.lease_revoke(lease).await.expect("revoke");
    eventually("the hook, then a new lease", 20, || {
        let v = m.view();
        (lost.load(Ordering::SeqCst) == 1 && v.rejoins == 1 && v.lease.is_some_and(|l| l != lease))
            .then_some(())
    })
    .await;
    eventually("its record back", 10, || {
        m.view().members.contains_key("solo").then_some(())
    })
    .await;
    m.leave().await;
}
