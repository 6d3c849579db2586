//! The daemon in its cluster: with `--etcd`, it joins as a member (its node's record under
//! its lease, a candidate in the election; `qm_cluster`), stops its agents when it finds its
//! lease lapsed (another member may run them by now) and leaves on shutdown, revoking the lease
//! so another member leads at once. Without it, the daemon is a cluster of one on SQLite. Either
//! way `GET /v1/cluster` answers from the view made here.

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

/// Joins the cluster `settings` names (or makes the view of a cluster of one).
pub(crate) async fn join(
    settings: Option<&ClusterSettings>,
    engine: &Engine,
    agents: Option<Supervisor>,
    url: &str,
) -> anyhow::Result<(qm_api::ClusterView, MemberHandle)> {
    let Some(settings) = settings else {
        let (name, url) = (engine.node_name().to_owned(), url.to_owned());
        let alone: qm_api::ClusterView = Arc::new(move || ClusterDoc {
            leader: Some(name.clone()),
            members: vec![ClusterMemberDoc {
                name: name.clone(),
                url: url.clone(),
                ready: true,
                leader: true,
                lease_expires_at: None,
            }],
            store: "sqlite".to_owned(),
        });
        return Ok((alone, None));
    };
    join_etcd(settings, engine, agents, url).await
}

#[cfg(feature = "etcd")]
async fn join_etcd(
    settings: &ClusterSettings,
    engine: &Engine,
    agents: Option<Supervisor>,
    url: &str,
) -> anyhow::Result<(qm_api::ClusterView, MemberHandle)> {
    use anyhow::Context;
    let node = engine
        .local_node()
        .await
        .map(|n| qm_proto::to_value(&n))
        .unwrap_or(serde_json::Value::Null);
    let config = qm_cluster::MemberConfig {
        prefix: settings.prefix.clone(),
        lease_ttl_s: settings.lease_ttl_s,
        node,
        ..qm_cluster::MemberConfig::new(settings.endpoints.clone(), engine.node_name(), url)
    };
    let member = qm_cluster::Member::join(config).await.with_context(|| {
        format!(
            "cannot join the cluster at {}",
            settings.endpoints.join(",")
        )
    })?;
    // a member that lost its lease stops its agents before it rejoins: no agent runs twice
    member.on_lost(move || {
        let agents = agents.clone();
        async move {
            let Some(s) = agents else { return };
            for a in s.list().into_iter().filter(|a| a.state.is_live()) {
                tracing::warn!(agent = %a.id, "stopping: this member lost its cluster lease");
                let _ = s.stop(&a.id, Some(std::time::Duration::from_secs(1))).await;
            }
        }
    });
    let view = member.clone();
    Ok((Arc::new(move || view.doc()), Some(member)))
}

#[cfg(not(feature = "etcd"))]
async fn join_etcd(
    _: &ClusterSettings,
    _: &Engine,
    _: Option<Supervisor>,
    _: &str,
) -> anyhow::Result<(qm_api::ClusterView, MemberHandle)> {
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
