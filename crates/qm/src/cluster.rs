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
use qm_proto::ClusterDoc;
use qm_supervisor::Supervisor;

use crate::serve::ClusterSettings;

/// The member, when the daemon is one.
#[cfg(feature = "etcd")]
pub(crate) type MemberHandle = Option<qm_cluster::Member>;
#[cfg(not(feature = "etcd"))]
pub(crate) type MemberHandle = Option<std::convert::Infallible>;

/// Joins the cluster `settings` names, when it names one: before the engine starts, so the
/// engine's store can write through the cluster's log (`replica`). The member's record
/// carries its node (`engine`'s capacity, allocatable and labels) for the leader's ledger.
pub(crate) async fn join(
    settings: Option<&ClusterSettings>,
    engine: &qm_engine::EngineConfig,
    url: &str,
) -> anyhow::Result<MemberHandle> {
    match settings {
        None => Ok(None),
        Some(s) => join_etcd(s, engine, url).await,
    }
}

/// The member's node as its record carries it: a node registration.
fn node_record(engine: &qm_engine::EngineConfig, ttl_s: i64) -> serde_json::Value {
    let render = |r| {
        qm_proto::render_resources(&engine.catalog, r)
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect::<qm_proto::WireResources>()
    };
    qm_proto::to_value(&qm_proto::NodeRegistration {
        name: engine.node_name.clone(),
        capacity: render(&engine.capacity),
        allocatable: Some(render(&engine.allocatable)),
        labels: Some(engine.labels.clone()),
        heartbeat_ttl_s: Some(ttl_s as f64 + 1.0),
    })
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

/// What the API knows of the cluster, once the engine and supervisor run: the view `GET
/// /v1/cluster` answers from, where the ledger's routes go while this member does not lead,
/// and (with agents on) where spawns go. A member's lost lease stops its agents from here on.
pub(crate) fn attach(
    member: &MemberHandle,
    engine: &Engine,
    agents: Option<Supervisor>,
    url: &str,
    ttl_ms: u64,
    admin_token_file: &std::path::Path,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<qm_api::Cluster> {
    #[cfg(feature = "etcd")]
    if let Some(m) = member {
        tokio::spawn(members_nodes(m.clone(), engine.clone(), ttl_ms));
        let view = m.clone();
        let leader = m.clone();
        let relay = qm_api::Relay::new(Arc::new(move || leader.leader_url()), ca_pem)
            .map_err(|e| anyhow::anyhow!("cluster.ca_file: {e}"))?;
        let http = qm_api::relay_agent(ca_pem, Some(std::time::Duration::from_secs(30)))
            .map_err(|e| anyhow::anyhow!("cluster.ca_file: {e}"))?;
        // agents follow their node: the leader places them, each member runs its own
        let placer = agents.map(|s| {
            crate::placement::EtcdPlacer::start(
                m.clone(),
                engine.clone(),
                s,
                admin_token_file.to_owned(),
                http,
            ) as Arc<dyn qm_api::Placer>
        });
        return Ok(qm_api::Cluster {
            view: Arc::new(move || view.doc()),
            forward: Some(Arc::new(relay)),
            placer,
        });
    }
    #[cfg(not(feature = "etcd"))]
    let _ = (member, agents, ttl_ms, admin_token_file, ca_pem);
    let (name, url) = (engine.node_name().to_owned(), url.to_owned());
    Ok(qm_api::Cluster {
        view: Arc::new(move || ClusterDoc::alone(&name, &url)),
        forward: None,
        placer: None,
    })
}

#[cfg(feature = "etcd")]
async fn join_etcd(
    settings: &ClusterSettings,
    engine: &qm_engine::EngineConfig,
    url: &str,
) -> anyhow::Result<MemberHandle> {
    use anyhow::Context;
    let config = qm_cluster::MemberConfig {
        prefix: settings.prefix.clone(),
        lease_ttl_s: settings.lease_ttl_s,
        node: node_record(engine, settings.lease_ttl_s),
        ..qm_cluster::MemberConfig::new(settings.endpoints.clone(), &engine.node_name, url)
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
async fn join_etcd(
    _: &ClusterSettings,
    _: &qm_engine::EngineConfig,
    _: &str,
) -> anyhow::Result<MemberHandle> {
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

/// While this member leads, the other members' nodes are in its ledger: each registered from
/// its record and heartbeated every second while its record lasts (kind `member`, held to a
/// heartbeat within the lease and a second). A member whose lease lapses loses its record, its
/// node misses its heartbeat, and the ledger marks it lost (its allocations `lost`); so does
/// the node of a member that led before and is gone.
#[cfg(feature = "etcd")]
async fn members_nodes(member: qm_cluster::Member, engine: Engine, ttl_ms: u64) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let view = member.view();
        if view.leading.is_none() {
            continue;
        }
        for (name, m) in &view.members {
            if name == member.name() {
                continue;
            }
            if engine.heartbeat(name.clone(), None).await.is_err() {
                let Ok(reg) =
                    serde_json::from_value::<qm_proto::NodeRegistration>(m.record.node.clone())
                else {
                    continue;
                };
                let Ok((spec, _)) = reg.into_spec(engine.catalog()) else {
                    continue;
                };
                if engine.register_node(spec, Some(ttl_ms)).await.is_err() {
                    continue;
                }
            }
            let _ = engine.watch_member(name.clone(), ttl_ms).await;
        }
        // members' nodes whose member is gone: held to the heartbeat they no longer get
        let Ok(nodes) = engine.nodes().await else {
            continue;
        };
        for n in nodes {
            let gone = (n.kind == "member" || n.kind == "local")
                && n.name != member.name()
                && !view.members.contains_key(&n.name);
            if gone && n.ready {
                let _ = engine.watch_member(n.name.clone(), ttl_ms).await;
            }
        }
    }
}
