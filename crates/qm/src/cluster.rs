//! The daemon in its cluster: with `--etcd`, it joins as a member (its record under its lease,
//! a candidate in the election; `qm_cluster`) before its engine starts, and the engine's store
//! writes through the cluster's log (`qm_cluster::EtcdLog`): only the leader's writes land, a
//! follower's are refused (503) and its engine serves what it last read; a member that comes to
//! lead takes every earlier leader's writes before it decides anything. It stops its agents
//! when it finds its lease lapsed (another member may run them by now) and leaves on shutdown,
//! revoking the lease so another member leads at once. Without `--etcd`, the daemon is a
//! cluster of one on SQLite. Either way `GET /v1/cluster` answers from the view made here.

use std::sync::Arc;

use qm_engine::Engine;
use qm_proto::{ClusterDoc, ClusterMemberDoc};
use qm_supervisor::Supervisor;

use crate::serve::ClusterSettings;

/// The member, when the daemon is one.
#[cfg(feature = "etcd")]
pub(crate) type MemberHandle = Option<qm_cluster::Member>;
#[cfg(not(feature = "etcd"))]
pub(crate) type MemberHandle = Option<std::convert::Infallible>;

/// Joins the cluster `settings` names, when it names one: before the engine starts, so the
/// engine's store can write through the cluster's log (`replica`).
pub(crate) async fn join(
    settings: Option<&ClusterSettings>,
    name: &str,
    url: &str,
) -> anyhow::Result<MemberHandle> {
    match settings {
        None => Ok(None),
        Some(s) => join_etcd(s, name, url).await,
    }
}

/// The cluster's log to give the engine's store, for a member.
pub(crate) fn replica(member: &MemberHandle) -> Option<Arc<dyn qm_store::Replica>> {
    #[cfg(feature = "etcd")]
    return member.as_ref().map(|m| {
        Arc::new(qm_cluster::EtcdLog::new(
            m.clone(),
            tokio::runtime::Handle::current(),
        )) as Arc<dyn qm_store::Replica>
    });
    #[cfg(not(feature = "etcd"))]
    {
        let _ = member;
        None
    }
}

/// The view `GET /v1/cluster` answers from, once the engine and supervisor run; a member's
/// lost lease stops its agents from here on.
pub(crate) fn attach(
    member: &MemberHandle,
    engine: &Engine,
    agents: Option<Supervisor>,
    url: &str,
) -> qm_api::ClusterView {
    #[cfg(feature = "etcd")]
    if let Some(m) = member {
        // a member that lost its lease stops its agents before it rejoins: no agent runs twice
        m.on_lost(move || {
            let agents = agents.clone();
            async move {
                let Some(s) = agents else { return };
                for a in s.list().into_iter().filter(|a| a.state.is_live()) {
                    tracing::warn!(agent = %a.id, "stopping: this member lost its cluster lease");
                    let _ = s.stop(&a.id, Some(std::time::Duration::from_secs(1))).await;
                }
            }
        });
        let view = m.clone();
        return Arc::new(move || view.doc());
    }
    #[cfg(not(feature = "etcd"))]
    let _ = (member, agents);
    let (name, url) = (engine.node_name().to_owned(), url.to_owned());
    Arc::new(move || ClusterDoc {
        leader: Some(name.clone()),
        members: vec![ClusterMemberDoc {
            name: name.clone(),
            url: url.clone(),
            ready: true,
            leader: true,
            lease_expires_at: None,
        }],
        store: "sqlite".to_owned(),
    })
}

/// Where a member that does not lead sends the ledger's routes: the leader's address, from
/// the view (None while this member leads, or no leader is known).
pub(crate) fn forward(member: &MemberHandle) -> Option<qm_api::Forward> {
    #[cfg(feature = "etcd")]
    return member.as_ref().map(|m| {
        let m = m.clone();
        Arc::new(move || m.leader_url()) as qm_api::Forward
    });
    #[cfg(not(feature = "etcd"))]
    {
        let _ = member;
        None
    }
}

#[cfg(feature = "etcd")]
async fn join_etcd(
    settings: &ClusterSettings,
    name: &str,
    url: &str,
) -> anyhow::Result<MemberHandle> {
    use anyhow::Context;
    let config = qm_cluster::MemberConfig {
        prefix: settings.prefix.clone(),
        lease_ttl_s: settings.lease_ttl_s,
        ..qm_cluster::MemberConfig::new(settings.endpoints.clone(), name, url)
    };
    let member = qm_cluster::Member::join(config).await.with_context(|| {
        format!(
            "cannot join the cluster at {}",
            settings.endpoints.join(",")
        )
    })?;
    Ok(Some(member))
}

#[cfg(not(feature = "etcd"))]
async fn join_etcd(_: &ClusterSettings, _: &str, _: &str) -> anyhow::Result<MemberHandle> {
    anyhow::bail!("this qm was built without etcd support (cargo build --features etcd)")
}

/// Leaves the cluster, when a member: the lease is revoked, so another member leads at once.
pub(crate) async fn leave(member: MemberHandle) {
    #[cfg(feature = "etcd")]
    if let Some(m) = member {
        m.leave().await;
    }
    #[cfg(not(feature = "etcd"))]
    let _ = member;
}
