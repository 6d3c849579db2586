//! Cluster membership on etcd (the store Kubernetes trusts), for `qm serve --etcd`.
//!
//! A [`Member`] holds an etcd lease (`lease_ttl_s`, kept alive at a third of it) and, under it,
//! its record at `<prefix>/members/<name>` (its API address and node document): the record
//! goes when the lease lapses, so a member that dies or stalls past its lease leaves the
//! cluster by itself. Every member campaigns in etcd's election at `<prefix>/leader` with the
//! same lease; the one elected leads until its lease lapses. Its leadership is a key with a
//! creation revision, and [`Member::fenced`] commits a transaction only while that key is the
//! one it created: a deposed or paused leader can never write (the fencing token is etcd's own
//! revision, not a clock). A member that finds its lease lapsed calls its `on_lost` hook (the
//! supervisor stops its agents: no agent runs twice) before it rejoins with a new lease.
//!
//! The view ([`Member::view`], [`Member::doc`]) follows the members through a watch on their
//! prefix and the leader through etcd's election announcements (a join, a leave or a new
//! leader costs each member one event; nothing is polled). How long each member's lease has
//! left costs a read per member, so it is read only while someone looks ([`Member::doc`] asks
//! for it; the next [`MemberConfig::refresh`] reads it).

mod log;
mod placement;
pub mod testing;

pub use log::{EtcdLog, LOG_SEQ_META};
pub use placement::{Changes, Learned, Placement, QUEUED, StopRequest};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use qm_proto::{ClusterDoc, ClusterMemberDoc, format_rfc3339};
use tokio::task::JoinHandle;

/// How a member joins.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster (`/qm`).
    pub prefix: String,
    /// The member's (and its node's) name.
    pub name: String,
    /// Where its API answers (`http://host:port`).
    pub url: String,
    /// The member's node document, kept in its record.
    pub node: serde_json::Value,
    /// Seconds the member's lease lasts without a keep-alive.
    pub lease_ttl_s: i64,
    /// How often the view is read from etcd (default 1 s).
    pub refresh: Duration,
}

impl MemberConfig {
    /// A config with the defaults: prefix `/qm`, a 10 s lease, the view read every 500 ms.
    pub fn new(endpoints: Vec<String>, name: &str, url: &str) -> Self {
        MemberConfig {
            endpoints,
            prefix: "/qm".to_owned(),
            name: name.to_owned(),
            url: url.to_owned(),
            node: serde_json::Value::Null,
            lease_ttl_s: 10,
            refresh: Duration::from_secs(1),
        }
    }
}

/// Why a member could not join or write.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd could not be reached or refused a call.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The configuration cannot work.
    #[error("cluster: {0}")]
    Config(String),
    /// This member does not lead (now, or any more): nothing was written.
    #[error("not the leader")]
    NotLeader,
}

/// A member's record in etcd.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub node: serde_json::Value,
}

/// One member as the view sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberEntry {
    pub record: Record,
    /// Its lease.
    pub lease: i64,
    /// When its lease lapses unless renewed (unix ms), where etcd said.
    pub lease_expires_ms: Option<u64>,
}

/// What this member knows of the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The leader's name.
    pub leader: Option<String>,
    /// Whether this member leads, and the creation revision of its leadership key (the
    /// fencing token).
    pub leading: Option<i64>,
    /// This member's lease, while it holds one.
    pub lease: Option<i64>,
    /// Members with a live lease, by name.
    pub members: BTreeMap<String, MemberEntry>,
    /// How many times this member lost its lease and rejoined.
    pub rejoins: u64,
}

/// Whether etcd's endpoint `url` takes a TCP connection within 500 ms.
async fn reachable(url: &str) -> bool {
    let addr = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// A task that ends with its owner: aborted when dropped (the owner's own task aborted by
/// [`Member::halt`] or [`Member::leave`] takes its children with it).
struct Child(JoinHandle<()>);

impl Drop for Child {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Hook =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// A member of the cluster; clones share it.
#[derive(Clone)]
pub struct Member {
    inner: Arc<Inner>,
}

struct Inner {
    config: MemberConfig,
    pub(crate) client: Client,
    view: RwLock<View>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    on_lost: Mutex<Option<Hook>>,
    /// Someone looked at the leases since the last refresh: read them at the next.
    leases_wanted: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.inner.config.name)
            .field("view", &self.view())
            .finish()
    }
}

impl Member {
    /// Connects, takes a lease, writes the member's record and starts keeping the lease,
    /// campaigning and reading the view. Answers once the record is written.
    pub async fn join(config: MemberConfig) -> Result<Self, ClusterError> {
        if config.endpoints.is_empty() {
            return Err(ClusterError::Config("no etcd endpoint".to_owned()));
        }
        if !(1..=3600).contains(&config.lease_ttl_s) {
            return Err(ClusterError::Config(format!(
                "lease_ttl_s: {} is not 1..=3600",
                config.lease_ttl_s
            )));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        // start on the endpoints that answer (a dead one would fail the first calls); the
        // others are put back once they do
        let mut up = Vec::new();
        for e in &config.endpoints {
            if reachable(e).await {
                up.push(e.clone());
            }
        }
        let down: std::collections::BTreeSet<String> = if up.is_empty() {
            up.clone_from(&config.endpoints);
            std::collections::BTreeSet::new()
        } else {
            config
                .endpoints
                .iter()
                .filter(|e| !up.contains(e))
                .cloned()
                .collect()
        };
        let client = Client::connect(up, Some(options)).await?;
        let member = Member {
            inner: Arc::new(Inner {
                config,
                client,
                view: RwLock::new(View::default()),
                tasks: Mutex::new(Vec::new()),
                on_lost: Mutex::new(None),
                leases_wanted: std::sync::atomic::AtomicBool::new(true),
            }),
        };
        if member.inner.config.endpoints.len() > 1 {
            member.spawn(member.clone().watch_endpoints(down));
        }
        let lease = member.register().await?;
        member.spawn(member.clone().session(lease));
        member.spawn(member.clone().watch_view());
        member.refresh().await;
        Ok(member)
    }

    /// Runs `hook` to its end when this member finds its lease lapsed, before it rejoins
    /// (the daemon stops its agents there: another member may run them by now).
    pub fn on_lost<F, Fut>(&self, hook: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let hook: Hook = Arc::new(move || Box::pin(hook()));
        if let Ok(mut h) = self.inner.on_lost.lock() {
            *h = Some(hook);
        }
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// What this member knows now.
    pub fn view(&self) -> View {
        self.inner
            .view
            .read()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// The leader's API address while another member leads (None while this one does, or no
    /// leader is known).
    pub fn leader_url(&self) -> Option<String> {
        let v = self.view();
        if v.leading.is_some() {
            return None;
        }
        let leader = v.leader?;
        if leader == self.name() {
            return None;
        }
        v.members.get(&leader).map(|m| m.record.url.clone())
    }

    /// The cluster as `GET /v1/cluster` shows it (the leases' expiry as of the last refresh
    /// that read them; asking marks them wanted for the next).
    pub fn doc(&self) -> ClusterDoc {
        self.inner
            .leases_wanted
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let v = self.view();
        ClusterDoc {
            leader: v.leader.clone(),
            members: v
                .members
                .values()
                .map(|m| ClusterMemberDoc {
                    name: m.record.name.clone(),
                    url: m.record.url.clone(),
                    ready: true,
                    leader: v.leader.as_deref() == Some(m.record.name.as_str()),
                    lease_expires_at: m.lease_expires_ms.map(format_rfc3339),
                })
                .collect(),
            store: "etcd".to_owned(),
        }
    }

    /// Commits `ops` in one etcd transaction that also checks this member's leadership key
    /// is still the one it created; `NotLeader` (and nothing written) otherwise.
    pub async fn fenced(&self, ops: Vec<TxnOp>) -> Result<(), ClusterError> {
        let Some(rev) = self.view().leading else {
            return Err(ClusterError::NotLeader);
        };
        self.fenced_at(rev, ops).await
    }

    /// [`fenced`](Self::fenced) with an explicit fencing token (the creation revision of the
    /// leadership key this member was elected with).
    pub async fn fenced_at(&self, rev: i64, ops: Vec<TxnOp>) -> Result<(), ClusterError> {
        self.fenced_when(rev, Vec::new(), ops).await
    }

    /// [`fenced_at`](Self::fenced_at) with further conditions, all of which must hold.
    pub async fn fenced_when(
        &self,
        rev: i64,
        mut when: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<(), ClusterError> {
        let key = self.leader_key_of(rev).await?;
        when.push(Compare::create_revision(key, CompareOp::Equal, rev));
        let txn = Txn::new().when(when).and_then(ops);
        let resp = self.inner.client.clone().txn(txn).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::NotLeader)
        }
    }

    /// Leaves: revokes the lease (the record and any leadership go at once) and stops.
    pub async fn leave(&self) {
        self.stop_tasks();
        let lease = self.view().lease;
        if let Some(id) = lease {
            let _ = self.inner.client.clone().lease_revoke(id).await;
        }
    }

    /// Stops keeping the lease without revoking it, as a crashed or paused process would:
    /// the record and leadership stay until the lease lapses. For tests and shutdown paths
    /// that must not look graceful.
    pub fn halt(&self) {
        self.stop_tasks();
    }

    fn stop_tasks(&self) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(f);
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.push(h);
        }
    }

    /// `<prefix>/<rest>`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.inner.config.prefix.trim_end_matches('/'))
    }

    /// The election's name (`<prefix>/leader`).
    fn election(&self) -> String {
        self.key("leader")
    }

    /// The leadership key created at `rev` under the election (etcd names it
    /// `<election>/<lease hex>`).
    async fn leader_key_of(&self, rev: i64) -> Result<Vec<u8>, ClusterError> {
        let resp = self
            .inner
            .client
            .clone()
            .get(
                format!("{}/", self.election()),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        resp.kvs()
            .iter()
            .find(|kv| kv.create_revision() == rev)
            .map(|kv| kv.key().to_vec())
            .ok_or(ClusterError::NotLeader)
    }

    /// Takes a lease and writes the member's record under it.
    /// One name, one member: the record is written only where none is (a member of the same
    /// name that died leaves when its lease lapses; until then this one waits, up to the lease
    /// and two seconds, then gives up naming the conflict).
    async fn register(&self) -> Result<i64, ClusterError> {
        let c = &self.inner.config;
        let mut client = self.inner.client.clone();
        let record = Record {
            name: c.name.clone(),
            url: c.url.clone(),
            node: c.node.clone(),
        };
        let value = serde_json::to_vec(&record)
            .map_err(|e| ClusterError::Config(format!("record: {e}")))?;
        let key = self.key(&format!("members/{}", c.name));
        let patience = Duration::from_secs(u64::try_from(c.lease_ttl_s).unwrap_or(10) + 2);
        let started = tokio::time::Instant::now();
        let lease = loop {
            let lease = client.lease_grant(c.lease_ttl_s, None).await?.id();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            if client.txn(txn).await?.succeeded() {
                break lease;
            }
            let _ = client.lease_revoke(lease).await;
            if started.elapsed() >= patience {
                return Err(ClusterError::Config(format!(
                    "a member named {:?} is already in the cluster",
                    c.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if let Ok(mut v) = self.inner.view.write() {
            v.lease = Some(lease);
        }
        tracing::info!(member = %c.name, lease, "joined the cluster");
        Ok(lease)
    }

    /// Keeps the client off etcd members that refuse connections: etcd-client balances over
    /// every endpoint it was given and keeps sending to a dead one (etcdv3/etcd-client#39),
    /// so each endpoint is tried (a TCP connect, nothing etcd has to answer) every 500 ms,
    /// taken out of the balance when it refuses and put back when it answers again. The last
    /// one is never taken out.
    async fn watch_endpoints(self, mut out: std::collections::BTreeSet<String>) {
        let endpoints = self.inner.config.endpoints.clone();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for e in &endpoints {
                let up = reachable(e).await;
                if !up && !out.contains(e) && out.len() + 1 < endpoints.len() {
                    if self.inner.client.remove_endpoint(e).await.is_ok() {
                        tracing::warn!(endpoint = %e, "etcd endpoint unreachable: taken out");
                        out.insert(e.clone());
                    }
                } else if up && out.contains(e) && self.inner.client.add_endpoint(e).await.is_ok() {
                    tracing::info!(endpoint = %e, "etcd endpoint answers again: put back");
                    out.remove(e);
                }
            }
        }
    }

    /// Keeps `lease` alive and campaigns under it; when the lease is lost, runs the hook,
    /// takes a new one and starts again.
    async fn session(self, mut lease: i64) {
        loop {
            let campaign = Child(tokio::spawn(self.clone().campaign(lease)));
            let lost = self.keep(lease).await;
            drop(campaign);
            if let Ok(mut v) = self.inner.view.write() {
                v.leading = None;
                v.lease = None;
                v.rejoins += 1;
            }
            tracing::warn!(member = %self.name(), lease, why = %lost, "lost the cluster lease");
            let hook = self.inner.on_lost.lock().ok().and_then(|h| h.clone());
            if let Some(hook) = hook {
                hook().await;
            }
            // rejoin, trying again until etcd answers
            lease = loop {
                match self.register().await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot rejoin the cluster yet");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
        }
    }

    /// Keeps `lease` alive at a third of its ttl; answers why it was lost (it lapsed, or
    /// etcd could not be reached for longer than the lease).
    async fn keep(&self, lease: i64) -> String {
        let ttl = self.inner.config.lease_ttl_s;
        let period = Duration::from_millis(u64::try_from(ttl).unwrap_or(10) * 1000 / 3);
        let mut last_ok = tokio::time::Instant::now();
        let deadline = Duration::from_secs(u64::try_from(ttl).unwrap_or(10));
        loop {
            let mut client = self.inner.client.clone();
            match client.lease_keep_alive(lease).await {
                Ok((mut keeper, mut stream)) => loop {
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match stream.message().await {
                        Ok(Some(r)) if r.ttl() > 0 => last_ok = tokio::time::Instant::now(),
                        Ok(Some(_)) => return "the lease lapsed".to_owned(),
                        Ok(None) | Err(_) => break,
                    }
                    tokio::time::sleep(period).await;
                },
                Err(e) => tracing::debug!(error = %e, "keep-alive failed"),
            }
            if last_ok.elapsed() >= deadline {
                return "etcd was unreachable for longer than the lease".to_owned();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Campaigns under `lease` until elected, then records the leadership's revision.
    async fn campaign(self, lease: i64) {
        let mut client = self.inner.client.clone();
        loop {
            match client
                .campaign(self.election(), self.name().to_owned(), lease)
                .await
            {
                Ok(resp) => {
                    let rev = resp.leader().map(|l| l.rev());
                    if let Ok(mut v) = self.inner.view.write() {
                        v.leading = rev;
                        v.leader = Some(self.name().to_owned());
                    }
                    tracing::info!(member = %self.name(), rev, "elected leader");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "campaign failed; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Keeps the view: the members by a watch on their prefix (a full read, then only the
    /// changes), the leader by observing the election, and, when wanted, the leases' expiry
    /// read every `refresh`.
    async fn watch_view(self) {
        let watcher = Child(tokio::spawn(self.clone().watch_members()));
        let observer = Child(tokio::spawn(self.clone().observe_leader()));
        loop {
            tokio::time::sleep(self.inner.config.refresh).await;
            self.refresh_leases().await;
            if watcher.0.is_finished() || observer.0.is_finished() {
                return;
            }
        }
    }

    /// The leader, as etcd's election announces it (the current one first, then each change);
    /// observed again when the stream ends.
    async fn observe_leader(self) {
        loop {
            let mut client = self.inner.client.clone();
            if let Ok(mut stream) = client.observe(self.election()).await {
                while let Ok(Some(r)) = stream.message().await {
                    self.saw_leader(
                        r.kv().and_then(|kv| kv.value_str().ok()).map(str::to_owned),
                        r.kv().map(|kv| kv.create_revision()),
                        r.header().map_or(0, |h| h.revision()),
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // between two streams a change may have gone unheard: read the leader once
            self.refresh().await;
        }
    }

    /// Records `leader` (its leadership key made at `leader_rev`), as etcd said at `read_at`.
    fn saw_leader(&self, leader: Option<String>, leader_rev: Option<i64>, read_at: i64) {
        if let Ok(mut v) = self.inner.view.write() {
            // a leader deposed (its lease lapsed, another elected since) hears it here too; a
            // read older than its own election says nothing about it
            if let Some(mine) = v.leading
                && read_at >= mine
                && leader_rev != Some(mine)
            {
                v.leading = None;
            }
            if read_at >= v.leading.unwrap_or(0) {
                v.leader = leader;
            }
        }
    }

    /// The members: a full read, then a watch from the revision after it; read again when the
    /// watch ends.
    async fn watch_members(self) {
        let prefix = self.key("members/");
        loop {
            let mut client = self.inner.client.clone();
            let Ok(resp) = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
            else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let rev = resp.header().map_or(0, |h| h.revision());
            let known = self.view().members;
            let mut members = BTreeMap::new();
            for kv in resp.kvs() {
                if let Some(e) = entry(kv.value(), kv.lease(), &known) {
                    members.insert(e.record.name.clone(), e);
                }
            }
            if let Ok(mut v) = self.inner.view.write() {
                v.members = members;
            }
            let watch = client
                .watch(
                    prefix.clone(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(rev + 1),
                    ),
                )
                .await;
            let Ok(mut stream) = watch else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            while let Ok(Some(resp)) = stream.message().await {
                if resp.canceled() {
                    break;
                }
                let Ok(mut v) = self.inner.view.write() else {
                    return;
                };
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let name = kv
                        .key_str()
                        .ok()
                        .and_then(|k| k.strip_prefix(prefix.as_str()))
                        .map(str::to_owned);
                    match ev.event_type() {
                        EventType::Put => {
                            if let Some(e) = entry(kv.value(), kv.lease(), &v.members) {
                                v.members.insert(e.record.name.clone(), e);
                            }
                        }
                        EventType::Delete => {
                            if let Some(n) = name {
                                v.members.remove(&n);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads the members' leases when someone asked for them.
    async fn refresh_leases(&self) {
        let mut client = self.inner.client.clone();
        if self
            .inner
            .leases_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let leases: Vec<(String, i64)> = self
                .view()
                .members
                .iter()
                .map(|(n, m)| (n.clone(), m.lease))
                .collect();
            let mut expiry = BTreeMap::new();
            for (name, lease) in leases {
                if let Ok(t) = client.lease_time_to_live(lease, None).await
                    && t.ttl() > 0
                {
                    expiry.insert(
                        name,
                        qm_proto::unix_ms() + u64::try_from(t.ttl()).unwrap_or(0) * 1000,
                    );
                }
            }
            if let Ok(mut v) = self.inner.view.write() {
                for (name, m) in &mut v.members {
                    m.lease_expires_ms = expiry.get(name).copied();
                }
            }
        }
    }

    /// Reads the leader once.
    async fn refresh(&self) {
        let mut client = self.inner.client.clone();
        // the leader, its leadership key's creation revision, and the revision read at
        let (leader, leader_rev, read_at) = match client.leader(self.election()).await {
            Ok(r) => (
                r.kv().and_then(|kv| kv.value_str().ok()).map(str::to_owned),
                r.kv().map(|kv| kv.create_revision()),
                r.header().map_or(0, |h| h.revision()),
            ),
            // no leader yet (etcd answers an error), or etcd unreachable: the view keeps
            // what it knew
            Err(_) => return,
        };
        self.saw_leader(leader, leader_rev, read_at);
    }
}

/// A member's entry from its record, keeping the lease expiry `known` had for it.
fn entry(value: &[u8], lease: i64, known: &BTreeMap<String, MemberEntry>) -> Option<MemberEntry> {
    let record: Record = serde_json::from_slice(value).ok()?;
    let lease_expires_ms = known
        .get(&record.name)
        .filter(|k| k.lease == lease)
        .and_then(|k| k.lease_expires_ms);
    Some(MemberEntry {
        record,
        lease,
        lease_expires_ms,
    })
}
