//! `qm serve`: the daemon. Settings come from flags, then the config file, then defaults; the
//! local node's capacity is detected from the kernel (cores, MemTotal) less reserves unless
//! `--capacity` says otherwise. Serves API v1 until SIGTERM or Ctrl-C, then finishes in-flight
//! requests and flushes the store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use qm_core::{LedgerConfig, ResourceCatalog, ResourceId, Resources};
use qm_engine::{Engine, EngineConfig};
use qm_monitor::MonitorConfig;
use qm_monitor::alerts::{Op, Rule, Severity};
use qm_monitor::history::Tier;
use qm_supervisor::{Supervisor, SupervisorConfig};
use serde::Deserialize;

/// The flags of `qm serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServeArgs {
    /// A TOML config file (flags override it)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Where state lives [default: ./qm-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// This node's name [default: the hostname]
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// The local node's capacity, e.g. cpu=4,memory=8Gi (instead of the detected one)
    #[arg(long, value_name = "LIST")]
    capacity: Option<String>,
    /// A label of this node, KEY=VALUE (repeatable), such as topology.qm.dev/zone=a: agents
    /// and allocations select nodes by them, spread constraints count by them
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The allocation strategy [default: priority]
    #[arg(long, value_name = "NAME")]
    strategy: Option<String>,
    /// The admin token: read from this file, or written there (0600) when it does not exist
    /// [default: <data-dir>/admin.token]
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// `tokens` (default) or `none`: every caller is the admin (loopback only, for demos)
    #[arg(long, value_name = "MODE")]
    auth: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key)
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback --listen address (tokens and state cross the network
    /// unencrypted)
    #[arg(long)]
    insecure: bool,
    /// Join the cluster kept in this etcd: client URLs, comma-separated
    #[arg(long, value_name = "URLS")]
    etcd: Option<String>,
}

/// The config file. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    node_name: Option<String>,
    capacity: Option<String>,
    /// This node's labels (`--label` adds to them).
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    strategy: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure: Option<bool>,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    reserve: Reserve,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    resources: ResourcesConfig,
    #[serde(default)]
    state: StateConfig,
    #[serde(default)]
    monitor: MonitorFile,
    #[serde(default)]
    history: HistoryFile,
    #[serde(default)]
    alerts: AlertsFile,
    #[serde(default)]
    agents: AgentsFile,
    #[serde(default)]
    pressure: PressureFile,
    #[serde(default)]
    cluster: ClusterFile,
    #[serde(default)]
    recommender: RecommenderFile,
}

/// `[recommender]`: how agents' sizes are learned from their usage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommenderFile {
    /// Samples before anything is recommended (default 30).
    min_samples: Option<u64>,
    /// With `cpu_percentile` and `memory_margin`: a model of these settings, next to the
    /// built-in ones (the one whose past advice cost least is used).
    half_life_s: Option<f64>,
    cpu_percentile: Option<f64>,
    memory_margin: Option<f64>,
    /// After an OOM kill, memory is at least the usage at the kill times this (default 1.2).
    oom_bump: Option<f64>,
    /// The `learned` strategy keeps requests as written below this confidence (default 0.5).
    min_confidence: Option<f64>,
    /// The `learned` strategy reserves at least the request as written divided by this, so
    /// requests as written add up to at most this times a node's allocatable (default 1.5).
    max_overcommit: Option<f64>,
}

fn recommender_config(
    file: RecommenderFile,
) -> anyhow::Result<(qm_recommend::Config, qm_recommend::AdmitRules)> {
    let mut admit = qm_recommend::AdmitRules::default();
    if let Some(c) = file.min_confidence {
        if !(c.is_finite() && (0.0..=1.0).contains(&c)) {
            bail!("recommender.min_confidence: {c} is not in [0, 1]");
        }
        admit.min_confidence = c;
    }
    if let Some(o) = file.max_overcommit {
        if !(o.is_finite() && (1.0..=10.0).contains(&o)) {
            bail!("recommender.max_overcommit: {o} is not in [1, 10]");
        }
        admit.max_overcommit = o;
    }
    let mut c = qm_recommend::Config::learned();
    if let Some(n) = file.min_samples {
        if !(1..=1_000_000).contains(&n) {
            bail!("recommender.min_samples: {n} is not 1..=1000000");
        }
        c.min_samples = n;
    }
    if let Some(b) = file.oom_bump {
        if !(b.is_finite() && (1.0..=10.0).contains(&b)) {
            bail!("recommender.oom_bump: {b} is not in [1, 10]");
        }
        c.oom_bump = b;
    }
    let any =
        file.half_life_s.is_some() || file.cpu_percentile.is_some() || file.memory_margin.is_some();
    if any {
        let half_life_s = file.half_life_s.unwrap_or(86_400.0);
        if !(half_life_s.is_finite() && (60.0..=90.0 * 86_400.0).contains(&half_life_s)) {
            bail!(
                "recommender.half_life_s: {half_life_s} is not a number of seconds in [60, 7776000]"
            );
        }
        let cpu_percentile = file.cpu_percentile.unwrap_or(0.9);
        if !(cpu_percentile.is_finite() && (0.5..=1.0).contains(&cpu_percentile)) {
            bail!("recommender.cpu_percentile: {cpu_percentile} is not in [0.5, 1]");
        }
        let memory_margin = file.memory_margin.unwrap_or(0.15);
        if !(memory_margin.is_finite() && (0.0..=2.0).contains(&memory_margin)) {
            bail!("recommender.memory_margin: {memory_margin} is not in [0, 2]");
        }
        c.models.push(qm_recommend::ModelSpec {
            name: "configured".to_owned(),
            half_life_s,
            cpu_percentile,
            memory_percentile: 0.99,
            memory_margin,
        });
    }
    Ok((c, admit))
}

/// The node's labels: the file's `labels`, then each `--label KEY=VALUE` (a flag wins).
fn node_labels(
    file: std::collections::BTreeMap<String, String>,
    flags: &[String],
) -> anyhow::Result<qm_core::Labels> {
    let mut labels: qm_core::Labels = file.into_iter().collect();
    for f in flags {
        let Some((k, v)) = f.split_once('=') else {
            bail!("--label: {f:?} is not KEY=VALUE");
        };
        labels.insert(k.to_owned(), v.to_owned());
    }
    let mut errors = Vec::new();
    qm_core::allocation::check_labels("labels", &labels, &mut errors);
    if let Some(e) = errors.first() {
        bail!("{}: {}", e.field, e.message);
    }
    if labels.contains_key(qm_core::NODE_LABEL) {
        bail!(
            "labels.{}: the node's name is its own label (--node-name)",
            qm_core::NODE_LABEL
        );
    }
    Ok(labels)
}

/// `[cluster]`: membership of a cluster on etcd (`--etcd` overrides `etcd`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    etcd: Option<Vec<String>>,
    prefix: Option<String>,
    lease_ttl_s: Option<i64>,
    /// PEM CA certificates the members' own HTTPS certificates are signed by: a member
    /// relaying to the leader trusts these (default: Mozilla's roots).
    ca_file: Option<PathBuf>,
}

/// How this daemon joins a cluster.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) struct ClusterSettings {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) lease_ttl_s: i64,
    /// The CA certificates members' HTTPS is checked against (PEM), when given.
    pub(crate) ca_pem: Option<Vec<u8>>,
}

fn cluster_settings(
    flag: Option<&str>,
    file: ClusterFile,
) -> anyhow::Result<Option<ClusterSettings>> {
    let endpoints: Vec<String> = match (flag, file.etcd) {
        (Some(f), _) => f
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
        (None, Some(list)) => list,
        (None, None) => return Ok(None),
    };
    if endpoints.is_empty() {
        bail!("cluster.etcd: give at least one etcd client URL");
    }
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            bail!("cluster.etcd: {e:?} is not an http:// or https:// URL");
        }
    }
    let prefix = file.prefix.unwrap_or_else(|| "/qm".to_owned());
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.contains("//") {
        bail!("cluster.prefix: {prefix:?} is not a key prefix such as /qm");
    }
    let lease_ttl_s = file.lease_ttl_s.unwrap_or(10);
    if !(2..=3600).contains(&lease_ttl_s) {
        bail!("cluster.lease_ttl_s: {lease_ttl_s} is not 2..=3600");
    }
    let ca_pem = match &file.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cluster.ca_file: {}: {e}", path.display()))?;
            if let Err(e) = qm_api::relay_agent(Some(&pem), None) {
                bail!("cluster.ca_file: {}: {e}", path.display());
            }
            Some(pem)
        }
        None => None,
    };
    if cfg!(not(feature = "etcd")) {
        bail!("cluster: this qm was built without etcd support (cargo build --features etcd)");
    }
    Ok(Some(ClusterSettings {
        endpoints,
        prefix,
        lease_ttl_s,
        ca_pem,
    }))
}

/// `[pressure]`: the levels' thresholds (utilization, 0..1) and minimum dwell, memory PSI's
/// share, the fast probe, and the responder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PressureFile {
    warning_enter: Option<f64>,
    warning_leave: Option<f64>,
    critical_enter: Option<f64>,
    critical_leave: Option<f64>,
    min_dwell_s: Option<f64>,
    /// Memory `some` avg10 (percent) that makes memory at least warning.
    psi_warning_pct: Option<f64>,
    /// Memory `full` avg10 (percent) that makes memory critical.
    psi_critical_pct: Option<f64>,
    /// Time between readings of the memory probe between collections (0: off).
    probe_interval_s: Option<f64>,
    /// Evict under critical memory pressure, and forecast leakers at warning.
    evict: Option<bool>,
    /// Throttle agents above their memory request under critical memory pressure.
    throttle: Option<bool>,
    /// Cap agents above their cpu request under critical cpu pressure (default off).
    throttle_cpu: Option<bool>,
    /// Between two evictions.
    cooldown_s: Option<f64>,
    /// A victim's grace between SIGTERM and SIGKILL.
    grace_s: Option<f64>,
    /// At warning, evict an agent forecast to use up the node's memory within this (0: off).
    forecast_horizon_s: Option<f64>,
    /// The least confidence (0..1) a forecast needs to evict on.
    forecast_confidence: Option<f64>,
}

/// A number of seconds in `range`, or an error naming `pressure.<field>`.
fn seconds(
    field: &str,
    v: Option<f64>,
    range: std::ops::RangeInclusive<f64>,
) -> anyhow::Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_finite() && range.contains(&v) => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => bail!(
            "pressure.{field}: {v} is not a number of seconds in [{}, {}]",
            range.start(),
            range.end()
        ),
    }
}

/// The PSI thresholds, probe interval and responder settings of `[pressure]`.
fn pressure_settings(
    file: &PressureFile,
) -> anyhow::Result<(
    qm_monitor::pressure::PsiThresholds,
    Option<Duration>,
    qm_supervisor::ResponderConfig,
)> {
    let mut psi = qm_monitor::pressure::PsiThresholds::default();
    for (field, v, slot) in [
        (
            "psi_warning_pct",
            file.psi_warning_pct,
            &mut psi.warning_pct,
        ),
        (
            "psi_critical_pct",
            file.psi_critical_pct,
            &mut psi.critical_pct,
        ),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0 && v <= 100.0) {
                bail!("pressure.{field}: {v} is not a percentage in (0, 100]");
            }
            *slot = v;
        }
    }
    let probe = seconds("probe_interval_s", file.probe_interval_s, 0.0..=10.0)?;
    let mut r = qm_supervisor::ResponderConfig::default();
    if let Some(v) = file.evict {
        r.evict = v;
    }
    if let Some(v) = file.throttle {
        r.throttle = v;
    }
    if let Some(v) = file.throttle_cpu {
        r.throttle_cpu = v;
    }
    if let Some(d) = seconds("cooldown_s", file.cooldown_s, 0.0..=3600.0)? {
        r.cooldown = d;
    }
    if let Some(d) = seconds("grace_s", file.grace_s, 0.0..=600.0)? {
        r.grace = d;
    }
    if let Some(d) = seconds(
        "forecast_horizon_s",
        file.forecast_horizon_s,
        0.0..=86_400.0,
    )? {
        r.forecast_horizon = d;
    }
    if let Some(c) = file.forecast_confidence {
        if !(c.is_finite() && (0.0..=1.0).contains(&c)) {
            bail!("pressure.forecast_confidence: {c} is not within 0..=1");
        }
        r.forecast_confidence = c;
    }
    Ok((psi, probe, r))
}

fn thresholds(file: &PressureFile) -> anyhow::Result<qm_pressure::Thresholds> {
    let mut t = qm_pressure::Thresholds::default();
    for (v, slot) in [
        (file.warning_enter, &mut t.warning_enter),
        (file.warning_leave, &mut t.warning_leave),
        (file.critical_enter, &mut t.critical_enter),
        (file.critical_leave, &mut t.critical_leave),
    ] {
        if let Some(v) = v {
            *slot = v;
        }
    }
    if let Some(d) = seconds("min_dwell_s", file.min_dwell_s, 0.0..=3600.0)? {
        t.min_dwell_ms = d.as_millis() as u64;
    }
    if let Some((field, message)) = t.validate().into_iter().next() {
        bail!("pressure.{field}: {message}");
    }
    Ok(t)
}

/// `[agents]`: the supervisor.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    /// Off: no agent or fleet routes.
    enabled: Option<bool>,
    /// Confine agents in cgroups (default true, where the host allows it).
    cgroups: Option<bool>,
    /// The cgroup mount (default /sys/fs/cgroup).
    cgroup_root: Option<PathBuf>,
    /// The group under which agents get theirs (default `qm`).
    cgroup_parent: Option<String>,
    /// Each log file is kept under this many bytes (default 10 MiB).
    log_max_bytes: Option<u64>,
    /// The user spawned agents run as unless their spec says: `dynamic` (default, a uid of
    /// its own per agent) or a user of this host.
    user: Option<String>,
    /// Restart backoff: first delay, cap, and the healthy run that resets it.
    backoff_initial_s: Option<f64>,
    backoff_max_s: Option<f64>,
    backoff_reset_after_s: Option<f64>,
}

/// `[monitor]`: the collection loop.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorFile {
    /// Off: no host or agent metrics, history or alerts.
    enabled: Option<bool>,
    /// Seconds between collections of the host (default 1).
    interval_s: Option<f64>,
    /// Seconds between collections of the agents (default 5; at least interval_s).
    agent_interval_s: Option<f64>,
    /// Read /proc, /sys and the cgroup mount under this directory instead of `/` (fixture
    /// trees, containers with the host's /proc mounted elsewhere).
    root: Option<PathBuf>,
}

/// `[history]`: tiers as `[[step_s, points], ...]`, finest first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFile {
    host_tiers: Option<Vec<(u64, usize)>>,
    agent_tiers: Option<Vec<(u64, usize)>>,
    max_series: Option<usize>,
    /// Agent series to keep (names); `[]` keeps all.
    agent_series: Option<Vec<String>>,
}

/// `[alerts]`: rules and where notifications go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    /// Ship the default rules (host memory, disk, cpu, memory pressure, file descriptors)
    /// besides the configured ones (default true).
    default_rules: Option<bool>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    webhooks: Vec<crate::notify::Webhook>,
    /// A command run for every alert transition, the alert as JSON on its stdin.
    exec: Option<Vec<String>>,
}

/// `[[alerts.rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    series: String,
    #[serde(default, rename = "match")]
    matchers: std::collections::BTreeMap<String, String>,
    op: String,
    threshold: f64,
    clear: Option<f64>,
    #[serde(default)]
    for_s: f64,
    severity: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    summary: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateConfig {
    /// Seconds ended allocations stay queryable (default a week).
    retention_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reserve {
    cpu: Option<String>,
    memory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueConfig {
    backfill_depth: Option<usize>,
    reserve_after_s: Option<u64>,
}

/// `[auth]`: how callers authenticate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    /// `tokens` (default) or `none`.
    mode: Option<String>,
    admin_token_file: Option<PathBuf>,
    /// Serve `/metrics` without a token (for a Prometheus that cannot send one).
    public_metrics: Option<bool>,
    /// Refused requests recorded in the audit log per second on average, and in a burst;
    /// the rest are counted on the next entry recorded.
    audit_refused_per_s: Option<f64>,
    audit_refused_burst: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesConfig {
    #[serde(default)]
    extended: std::collections::BTreeMap<String, u64>,
}

/// Settings after flags, file and defaults are merged and checked.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    /// HTTPS when set, from `--tls-cert` and `--tls-key`.
    pub(crate) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Plain HTTP on a non-loopback address, allowed by `--insecure`.
    pub(crate) insecure: bool,
    pub(crate) engine: EngineConfig,
    /// How callers authenticate.
    pub(crate) auth: qm_api::AuthConfig,
    /// The bootstrap admin token's file.
    pub(crate) admin_token_file: PathBuf,
    pub(crate) notify: crate::notify::NotifyConfig,
    pub(crate) agents: Option<SupervisorConfig>,
    /// Membership of a cluster on etcd, when asked for.
    pub(crate) cluster: Option<ClusterSettings>,
}

fn agents_config(file: AgentsFile, data_dir: &Path) -> anyhow::Result<Option<SupervisorConfig>> {
    if !file.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let mut c = SupervisorConfig::new(data_dir.to_owned());
    if let Some(v) = file.cgroups {
        c.cgroups = v;
    }
    if let Some(v) = file.cgroup_root {
        c.cgroup_root = v;
    }
    if let Some(v) = file.cgroup_parent {
        if !qm_proto::valid_name(&v) {
            bail!("agents.cgroup_parent: {v:?} is not 1..128 of [A-Za-z0-9._-]");
        }
        c.cgroup_parent = v;
    }
    if let Some(v) = file.user {
        qm_supervisor::valid_default_user(&v).map_err(|e| anyhow::anyhow!("agents.user: {e}"))?;
        c.user = v;
    }
    if let Some(v) = file.log_max_bytes {
        if v < 4096 {
            bail!("agents.log_max_bytes: must be at least 4096");
        }
        c.log_max_bytes = v;
    }
    let secs = |field: &str, v: Option<f64>| -> anyhow::Result<Option<u64>> {
        match v {
            Some(s) if !(s.is_finite() && s > 0.0 && s <= 86_400.0) => {
                bail!("agents.{field}: {s} is not a number of seconds in (0, 86400]")
            }
            Some(s) => Ok(Some((s * 1000.0) as u64)),
            None => Ok(None),
        }
    };
    if let Some(ms) = secs("backoff_initial_s", file.backoff_initial_s)? {
        c.backoff.initial_ms = ms;
    }
    if let Some(ms) = secs("backoff_max_s", file.backoff_max_s)? {
        c.backoff.max_ms = ms;
    }
    if let Some(ms) = secs("backoff_reset_after_s", file.backoff_reset_after_s)? {
        c.backoff.reset_after_ms = ms;
    }
    if let Some((field, message)) = c.backoff.validate().into_iter().next() {
        bail!("agents.{field}: {message}");
    }
    Ok(Some(c))
}

fn tiers(field: &str, list: &[(u64, usize)]) -> anyhow::Result<Vec<Tier>> {
    list.iter()
        .enumerate()
        .map(|(i, &(step_s, points))| {
            if step_s == 0 {
                bail!("{field}[{i}]: the step must be at least 1 second");
            }
            Ok(Tier {
                step_ms: step_s.saturating_mul(1000),
                points,
            })
        })
        .collect()
}

fn rule(i: usize, r: RuleFile) -> anyhow::Result<Rule> {
    let field = format!("alerts.rules[{i}]");
    let op: Op =
        r.op.parse()
            .map_err(|e| anyhow::anyhow!("{field}.op: {e}"))?;
    let severity: Severity = r
        .severity
        .as_deref()
        .unwrap_or("warning")
        .parse()
        .map_err(|e| anyhow::anyhow!("{field}.severity: {e}"))?;
    if !(r.for_s.is_finite() && r.for_s >= 0.0 && r.for_s <= 30.0 * 86_400.0) {
        bail!(
            "{field}.for_s: {} is not a number of seconds in [0, 30 days]",
            r.for_s
        );
    }
    let rule = Rule {
        name: r.name,
        series: r.series,
        matchers: r.matchers,
        op,
        threshold: r.threshold,
        clear: r.clear,
        for_ms: (r.for_s * 1000.0) as u64,
        severity,
        labels: r.labels,
        summary: r.summary,
    };
    if let Some((f, message)) = rule.validate().into_iter().next() {
        bail!("{field}.{f}: {message}");
    }
    Ok(rule)
}

fn monitor_config(
    monitor: MonitorFile,
    history: HistoryFile,
    alerts: AlertsFile,
) -> anyhow::Result<(Option<MonitorConfig>, crate::notify::NotifyConfig)> {
    let mut m = MonitorConfig::default();
    if let Some(i) = monitor.interval_s {
        if !(i.is_finite() && (0.05..=3600.0).contains(&i)) {
            bail!("monitor.interval_s: {i} is not a number of seconds in [0.05, 3600]");
        }
        m.interval = Duration::from_secs_f64(i);
    }
    if let Some(i) = monitor.agent_interval_s {
        if !(i.is_finite() && (0.05..=3600.0).contains(&i)) {
            bail!("monitor.agent_interval_s: {i} is not a number of seconds in [0.05, 3600]");
        }
        m.agent_interval = Duration::from_secs_f64(i);
    }
    if let Some(root) = &monitor.root {
        m.paths = qm_sys::Paths::with_root(root);
    }
    if let Some(t) = &history.host_tiers {
        m.history.host_tiers = tiers("history.host_tiers", t)?;
    }
    if let Some(t) = &history.agent_tiers {
        m.history.agent_tiers = tiers("history.agent_tiers", t)?;
    }
    if let Some(n) = history.max_series {
        m.history.max_series = n;
    }
    if let Some(names) = history.agent_series {
        m.history.agent_series = names;
    }
    if let Some(problem) = m.history.validate().into_iter().next() {
        bail!("history: {problem}");
    }
    if !alerts.default_rules.unwrap_or(true) {
        m.rules.clear();
    }
    for (i, r) in alerts.rules.into_iter().enumerate() {
        m.rules.push(rule(i, r)?);
    }
    let mut names = std::collections::BTreeSet::new();
    for r in &m.rules {
        if !names.insert(r.name.clone()) {
            bail!("alerts.rules: the rule name {:?} is used twice", r.name);
        }
    }
    let notify = crate::notify::NotifyConfig::new(alerts.webhooks, alerts.exec)?;
    let enabled = monitor.enabled.unwrap_or(true);
    Ok((enabled.then_some(m), notify))
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    // toml's message quotes the offending line, so it names the key.
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "config {} is invalid: {}",
            path.display(),
            e.to_string().trim()
        )
    })
}

/// `cpu=4,memory=8Gi,gpu=1` into a vector.
pub(crate) fn parse_capacity(
    catalog: &ResourceCatalog,
    field: &str,
    text: &str,
) -> anyhow::Result<Resources> {
    let mut pairs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("{field}: {part:?} is not name=quantity");
        };
        pairs.push((k.trim(), v.trim()));
    }
    Ok(catalog.parse(field, pairs)?)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Cores and MemTotal, from the kernel.
fn detect_capacity() -> Resources {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Resources::new(u64::try_from(cores).unwrap_or(1) * 1000, mem_kib * 1024)
}

impl Settings {
    pub(crate) fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(p) => read_config(p)?,
            None => FileConfig::default(),
        };
        let mut catalog = ResourceCatalog::default();
        for name in file.resources.extended.keys() {
            catalog
                .intern(name)
                .with_context(|| format!("config resources.extended.{name}"))?;
        }
        let listen = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:7070".to_owned());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen: {listen:?} is not an address like 127.0.0.1:7070"))?;
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(&cert, &key)?),
            (Some(_), None) => bail!("--tls-cert needs --tls-key (the certificate's private key)"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert (the certificate it signs for)"),
            (None, None) => None,
        };
        let insecure = tls.is_none() && !listen.ip().is_loopback();
        if insecure && !(args.insecure || file.insecure.unwrap_or(false)) {
            bail!(
                "listen: {listen} is not a loopback address; serve TLS (--tls-cert/--tls-key) or pass --insecure"
            );
        }
        let auth_mode = match args.auth.clone().or(file.auth.mode.clone()).as_deref() {
            None | Some("tokens") => qm_api::AuthMode::Tokens,
            Some("none") if listen.ip().is_loopback() => qm_api::AuthMode::None,
            Some("none") => {
                bail!("auth: none is for loopback demos only; {listen} is not a loopback address")
            }
            Some(other) => bail!("auth: {other:?} is not tokens or none"),
        };
        let defaults = qm_api::AuthConfig::default();
        let rate = |field: &str, v: Option<f64>, default: f64| -> anyhow::Result<f64> {
            match v {
                None => Ok(default),
                Some(r) if (1.0..=1e6).contains(&r) => Ok(r),
                Some(r) => bail!("auth.{field}: {r} is not a number in [1, 1000000]"),
            }
        };
        let auth = qm_api::AuthConfig {
            mode: auth_mode,
            public_metrics: file.auth.public_metrics.unwrap_or(false),
            refused_per_s: rate(
                "audit_refused_per_s",
                file.auth.audit_refused_per_s,
                defaults.refused_per_s,
            )?,
            refused_burst: rate(
                "audit_refused_burst",
                file.auth.audit_refused_burst,
                defaults.refused_burst,
            )?,
        };
        let admin_token_file_flag = args
            .admin_token_file
            .clone()
            .or(file.auth.admin_token_file.clone());
        let strategy = args
            .strategy
            .clone()
            .or(file.strategy)
            .unwrap_or_else(|| "priority".to_owned());
        qm_sched::preset(&strategy).map_err(|e| anyhow::anyhow!("strategy: {e}"))?;
        let capacity = match args.capacity.clone().or(file.capacity) {
            Some(text) => parse_capacity(&catalog, "capacity", &text)?,
            None => {
                let mut c = detect_capacity();
                for (name, count) in &file.resources.extended {
                    if let Some(id) = catalog.lookup(name) {
                        c.set(id, *count);
                    }
                }
                c
            }
        };
        let mut reserve = Resources::default();
        if let Some(cpu) = &file.reserve.cpu {
            reserve.set(
                ResourceId::CPU,
                qm_core::quantity::parse(ResourceId::CPU.unit(), cpu)
                    .map_err(|e| anyhow::anyhow!("reserve.cpu: {e}"))?,
            );
        }
        if let Some(mem) = &file.reserve.memory {
            reserve.set(
                ResourceId::MEMORY,
                qm_core::quantity::parse(ResourceId::MEMORY.unit(), mem)
                    .map_err(|e| anyhow::anyhow!("reserve.memory: {e}"))?,
            );
        }
        let allocatable = capacity.saturating_sub(&reserve);
        let mut ledger = LedgerConfig::default();
        if let Some(d) = file.queue.backfill_depth {
            if d == 0 {
                bail!("queue.backfill_depth: must be at least 1");
            }
            ledger.backfill_depth = d;
        }
        if let Some(s) = file.queue.reserve_after_s {
            ledger.reserve_after_ms = s.saturating_mul(1000);
        }
        let labels = node_labels(file.labels, &args.labels)?;
        let engine = EngineConfig {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./qm-data")),
            node_name: args
                .node_name
                .clone()
                .or(file.node_name)
                .unwrap_or_else(hostname),
            capacity,
            allocatable,
            labels,
            strategy,
            ledger,
            catalog,
            tick: Duration::from_millis(250),
            retention: Duration::from_secs(file.state.retention_s.unwrap_or(7 * 86_400)),
            monitor: None,
            admin_token_sha256: None,
            clock: qm_engine::clock::system(),
            replica: None,
        };
        let pressure = thresholds(&file.pressure)?;
        let cluster = cluster_settings(args.etcd.as_deref(), file.cluster)?;
        let (psi, probe, responder) = pressure_settings(&file.pressure)?;
        let (monitor, notify) = monitor_config(file.monitor, file.history, file.alerts)?;
        let monitor = monitor.map(|m| MonitorConfig {
            thresholds: pressure,
            psi,
            probe_interval: probe.unwrap_or(m.probe_interval),
            leak: qm_monitor::pressure::LeakWatch {
                horizon_s: responder.forecast_horizon.as_secs_f64(),
                confidence: responder.forecast_confidence,
            },
            ..m
        });
        let (recommender, admit) = recommender_config(file.recommender)?;
        let agents = agents_config(file.agents, &engine.data_dir)?.map(|a| SupervisorConfig {
            responder,
            recommender,
            admit,
            ..a
        });
        let admin_token_file =
            admin_token_file_flag.unwrap_or_else(|| engine.data_dir.join("admin.token"));
        Ok(Self {
            auth,
            admin_token_file,
            listen,
            tls,
            insecure,
            engine: EngineConfig { monitor, ..engine },
            notify,
            agents,
            cluster,
        })
    }
}

/// Runs the daemon until a signal.
pub(crate) fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::resolve(args)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(
            std::env::var("QM_WORKERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
        )
        .build()
        .context("cannot start the async runtime")?;
    let admin = crate::token_file::bootstrap(&settings.admin_token_file)?;
    settings.engine.admin_token_sha256 = Some(qm_engine::tokens::digest(&admin));
    drop(admin);
    if settings.auth.mode == qm_api::AuthMode::None {
        tracing::warn!(
            "AUTH IS OFF (--auth none): every local process is the admin of this daemon; use it for demos only"
        );
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr().context("no local address")?;
        let scheme = if settings.tls.is_some() { "https" } else { "http" };
        let reach = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let self_url = format!("{scheme}://{reach}");
        // a member joins before its engine starts: the engine's store writes through the log
        let member =
            crate::cluster::join(settings.cluster.as_ref(), &settings.engine, &self_url).await?;
        let mut engine_config = settings.engine.clone();
        engine_config.replica = crate::cluster::replica(&member);
        let engine = tokio::task::spawn_blocking(move || Engine::start(engine_config))
            .await
            .context("the engine did not start")??;
        tracing::info!(%addr, tls = settings.tls.is_some(), node = %settings.engine.node_name, data_dir = %settings.engine.data_dir.display(), "serving API v1");
        if settings.insecure {
            tracing::warn!(%addr, "INSECURE: plain HTTP on a non-loopback address (--insecure): tokens and state cross the network unencrypted; serve TLS with --tls-cert/--tls-key");
        }
        // Tests and scripts read this line to learn the port.
        println!("listening on {addr}");
        crate::notify::start(&settings.notify, &engine);
        let pointer = crate::token_file::publish(addr.port(), &settings.admin_token_file);
        if let Some(a) = &mut settings.agents {
            a.server_url = Some(self_url.clone());
        }
        let agents = match settings.agents.clone() {
            Some(c) => Some(
                Supervisor::start(engine.clone(), c)
                    .await
                    .context("the supervisor did not start")?,
            ),
            None => None,
        };
        let member_ttl_ms = settings
            .cluster
            .as_ref()
            .map_or(0, |c| u64::try_from(c.lease_ttl_s).unwrap_or(10) * 1000 + 1000);
        let cluster =
            crate::cluster::attach(
                &member,
                &engine,
                agents.clone(),
                &self_url,
                member_ttl_ms,
                &settings.admin_token_file,
                settings
                    .cluster
                    .as_ref()
                    .and_then(|c| c.ca_pem.as_deref()),
            )?;
        let learner = agents.clone();
        let app = qm_api::router(engine.clone(), agents, settings.auth, Some(cluster));
        let closing = engine.clone();
        let shutdown = async move {
            shutdown_signal().await;
            // Open event streams would otherwise keep the server from finishing.
            closing.close_events();
        };
        match settings.tls.clone() {
            None => {
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(tls) => {
                use axum::serve::ListenerExt;
                // tapped (doing nothing) so axum hands each request its peer's address
                let listener = crate::tls::TlsListener::new(listener, tls)
                    .context("cannot serve TLS")?
                    .tap_io(|_| {});
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
        .context("server failed")?;
        if let Some(p) = &pointer {
            crate::token_file::unpublish(p, &settings.admin_token_file);
        }
        tracing::info!("shutting down: flushing state");
        if let Some(a) = &learner {
            a.save_learning();
        }
        crate::cluster::leave(member).await;
        engine.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
