//! The client commands: `qm status`, `qm alloc ...`, `qm pools ...`, `qm nodes ...`. Tables for
//! people, `-o json` for scripts; exit 1 when the daemon refuses, 2 for invalid input, 3 when
//! it cannot be reached.

use std::io::Write;

use qm_client::{Client, ClientError};
use qm_proto::{AllocationDoc, to_json};
use serde_json::{Value, json};

/// `qm alloc request` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct RequestArgs {
    /// The agent's name
    #[arg(long)]
    agent: String,
    /// Cpu, e.g. 500m or 2
    #[arg(long)]
    cpu: Option<String>,
    /// Memory, e.g. 256Mi
    #[arg(long)]
    memory: Option<String>,
    /// Whole gpus
    #[arg(long)]
    gpu: Option<String>,
    /// Priority 0..=1000
    #[arg(long)]
    priority: Option<i64>,
    /// The pool
    #[arg(long)]
    pool: Option<String>,
    /// A lease in seconds
    #[arg(long)]
    ttl: Option<f64>,
    /// Wait in the queue when it does not fit now
    #[arg(long)]
    queue: bool,
    /// With --queue, wait up to this many seconds for the grant
    #[arg(long)]
    wait: Option<f64>,
}

/// `qm alloc`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AllocCmd {
    /// Request an allocation; prints its id
    Request(RequestArgs),
    /// List allocations
    Ls {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one allocation
    Get { id: String },
    /// Release an allocation
    Release { id: String },
}

/// `qm pools`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum PoolsCmd {
    /// List pools
    Ls,
    /// Create a pool
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        weight: i64,
        /// Guaranteed cpu
        #[arg(long)]
        guaranteed_cpu: Option<String>,
        /// Cpu limit
        #[arg(long)]
        limit_cpu: Option<String>,
    },
    /// Delete a pool
    Delete { name: String },
}

/// What a client command failed with, as an exit code and a sentence.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Unreachable { .. } | ClientError::Untrusted { .. } => 3,
            ClientError::Refused(p) if p.status == 422 || p.status == 400 => 2,
            _ => 1,
        };
        let hint = match &e {
            ClientError::Untrusted { .. } => {
                "; pass the CA certificate that signed it with --cacert FILE (or QM_CACERT)"
            }
            ClientError::Refused(p) if p.status == 401 => {
                "; pass --token or set QM_TOKEN (the daemon writes its admin token to <data-dir>/admin.token)"
            }
            _ => "",
        };
        Self {
            code,
            message: format!("{e}{hint}"),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self {
            code: 1,
            message: format!("cannot write output: {e}"),
        }
    }
}

fn alloc_table(out: &mut impl Write, items: &[AllocationDoc]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<14} {:<20} {:<10} {:<10} {:<12} {:>4}  RESOURCES",
        "ID", "AGENT", "POOL", "STATE", "NODE", "PRIO"
    )?;
    for a in items {
        let res: Vec<String> = a
            .resources
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            out,
            "{:<14} {:<20} {:<10} {:<10} {:<12} {:>4}  {}",
            a.id,
            a.agent,
            a.pool,
            a.state,
            a.node.as_deref().unwrap_or("-"),
            a.priority,
            res.join(",")
        )?;
    }
    Ok(())
}

pub(crate) fn status(c: &Client, json_out: bool, out: &mut impl Write) -> Result<(), Failure> {
    let node = c.node()?;
    let pools = c.pools()?;
    let live = c.allocations("state=granted", 1000)?.len();
    let queued = c.allocations("state=queued", 1000)?.len();
    // a daemon without a monitor has no pressure to show
    let pressure = c.pressure().ok();
    let me: Option<qm_proto::WhoAmI> = c
        .request("GET", "/v1/whoami", None)
        .ok()
        .and_then(|(_, v)| serde_json::from_value(v).ok());
    if json_out {
        writeln!(
            out,
            "{}",
            json!({ "node": node, "pools": pools, "granted": live, "queued": queued, "pressure": pressure, "whoami": me })
        )?;
        return Ok(());
    }
    match &me {
        Some(m) if m.auth == "none" => writeln!(
            out,
            "auth        OFF: this daemon runs with --auth none, every local process is its admin"
        )?,
        Some(m) => writeln!(
            out,
            "auth        {} (token {}, role {})",
            m.name, m.token_id, m.role
        )?,
        None => {}
    }
    let fmt = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    writeln!(
        out,
        "node        {} ({}, {})",
        node.name,
        node.kind,
        if node.ready { "ready" } else { "not ready" }
    )?;
    match &pressure {
        Some(p) => pressure_lines(p, out)?,
        None => writeln!(out, "pressure    {}", node.pressure)?,
    }
    let alerts = c.alerts(None).unwrap_or_default();
    let firing = alerts.iter().filter(|a| a.state == "firing").count();
    let pending = alerts.iter().filter(|a| a.state == "pending").count();
    writeln!(out, "alerts      {firing} firing, {pending} pending")?;
    writeln!(
        out,
        "allocations {live} granted, {queued} queued (first 1000 counted)"
    )?;
    writeln!(out)?;
    let usage = node.usage.clone().unwrap_or_default();
    let cell = |m: &std::collections::BTreeMap<String, String>, r: &str| {
        m.get(r).cloned().unwrap_or_else(|| "-".to_owned())
    };
    writeln!(
        out,
        "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "RESOURCE", "CAPACITY", "ALLOCATABLE", "ALLOCATED", "AVAILABLE", "USED"
    )?;
    for r in node.capacity.keys() {
        writeln!(
            out,
            "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}",
            r,
            cell(&node.capacity, r),
            cell(&node.allocatable, r),
            cell(&node.allocated, r),
            cell(&node.available, r),
            cell(&usage, r)
        )?;
    }
    writeln!(out)?;
    for p in pools {
        writeln!(
            out,
            "pool {:<10} weight {} allocated {} queued {}",
            p.name,
            p.weight,
            fmt(&p.allocated),
            p.queued
        )?;
    }
    Ok(())
}

/// Bytes as MiB or GiB, for people.
fn human_bytes(b: f64) -> String {
    let mib = b / 1048576.0;
    if mib.abs() >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

/// `qm status`'s pressure block: the level and admission, each signal that is not idle, the
/// agents heading for exhaustion and what the responder did.
fn pressure_lines(p: &qm_proto::PressureDoc, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "pressure    {} since {} (admission {})",
        p.level, p.since, p.admission
    )?;
    for (name, s) in &p.signals {
        let left = match name.as_str() {
            "memory" | "disk" => human_bytes(s.available),
            "cpu" => format!("{:.2} cores", s.available),
            _ => format!("{:.0}", s.available),
        };
        let mut line = format!(
            "  {name:<9} {:<8} {:>3.0}% used, {left} left",
            s.level,
            s.utilization * 100.0
        );
        if let Some(psi) = s.psi_some_avg10.filter(|v| *v > 0.0) {
            line.push_str(&format!(", psi {psi:.1}%"));
        }
        if let Some(e) = s.exhaustion_in_s {
            line.push_str(&format!(", exhausted in {e:.0} s"));
        }
        if s.anomaly {
            line.push_str(", anomaly");
        }
        writeln!(out, "{line}")?;
    }
    for a in p
        .agents
        .iter()
        .filter(|a| a.exhaustion_in_s.is_some() || a.throttled)
    {
        let mut line = format!(
            "  agent {} {} {:+.1} MiB/s",
            a.agent,
            human_bytes(a.memory_bytes),
            a.trend_per_s / 1048576.0
        );
        if let Some(e) = a.exhaustion_in_s {
            line.push_str(&format!(", would exhaust the node in {e:.0} s"));
        }
        if a.throttled {
            line.push_str(", throttled");
        }
        writeln!(out, "{line}")?;
    }
    let r = &p.responder;
    if r.evictions_critical + r.evictions_forecast + r.throttles > 0 {
        writeln!(
            out,
            "  responder {} evicted at critical, {} on forecast, {} throttled ({} now)",
            r.evictions_critical,
            r.evictions_forecast,
            r.throttles,
            r.throttled.len()
        )?;
    }
    if let Some(e) = &r.last_eviction {
        writeln!(out, "  last eviction {} at {}: {}", e.agent, e.at, e.reason)?;
    }
    Ok(())
}

pub(crate) fn alloc(
    c: &Client,
    cmd: AllocCmd,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match cmd {
        AllocCmd::Request(a) => {
            let mut resources = serde_json::Map::new();
            for (k, v) in [("cpu", &a.cpu), ("memory", &a.memory), ("gpu", &a.gpu)] {
                if let Some(v) = v {
                    resources.insert(k.to_owned(), Value::String(v.clone()));
                }
            }
            let mut body = json!({ "agent": a.agent, "resources": resources, "queue": a.queue });
            if let Some(p) = a.priority {
                body["priority"] = json!(p);
            }
            if let Some(p) = &a.pool {
                body["pool"] = json!(p);
            }
            if let Some(t) = a.ttl {
                body["ttl_s"] = json!(t);
            }
            let s = c.allocate(&body)?;
            let mut doc = s.allocation;
            if doc.state == "queued"
                && let Some(w) = a.wait
            {
                doc = c.allocation(&doc.id, Some(w))?;
            }
            if json_out {
                writeln!(out, "{}", to_json(&doc))?;
            } else {
                writeln!(out, "{}", doc.id)?;
            }
            if doc.state == "queued" && a.wait.is_some() {
                return Err(Failure {
                    code: 1,
                    message: format!("allocation {} is still queued", doc.id),
                });
            }
            Ok(())
        }
        AllocCmd::Ls {
            agent,
            pool,
            state,
            limit,
        } => {
            let mut q = Vec::new();
            for (k, v) in [("agent", agent), ("pool", pool), ("state", state)] {
                if let Some(v) = v {
                    q.push(format!("{k}={v}"));
                }
            }
            let items = c.allocations(&q.join("&"), limit)?;
            if json_out {
                writeln!(out, "{}", json!({ "items": items }))?;
            } else {
                alloc_table(out, &items)?;
            }
            Ok(())
        }
        AllocCmd::Get { id } => {
            let doc = c.allocation(&id, None)?;
            show(out, &doc, json_out)
        }
        AllocCmd::Release { id } => {
            let doc = c.release(&id)?;
            show(out, &doc, json_out)
        }
    }
}

fn show(out: &mut impl Write, doc: &AllocationDoc, json_out: bool) -> Result<(), Failure> {
    if json_out {
        writeln!(out, "{}", to_json(doc))?;
    } else {
        alloc_table(out, std::slice::from_ref(doc))?;
    }
    Ok(())
}

pub(crate) fn pools(
    c: &Client,
    cmd: PoolsCmd,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let docs = match cmd {
        PoolsCmd::Ls => c.pools()?,
        PoolsCmd::Create {
            name,
            weight,
            guaranteed_cpu,
            limit_cpu,
        } => {
            let mut body = json!({ "name": name, "weight": weight });
            if let Some(g) = guaranteed_cpu {
                body["guaranteed"] = json!({ "cpu": g });
            }
            if let Some(l) = limit_cpu {
                body["limit"] = json!({ "cpu": l });
            }
            vec![c.create_pool(&body)?]
        }
        PoolsCmd::Delete { name } => vec![c.delete_pool(&name)?],
    };
    if json_out {
        writeln!(out, "{}", json!({ "items": docs }))?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<16} {:>6} {:>7} {:>6}  ALLOCATED",
        "NAME", "WEIGHT", "QUEUED", "SHARE"
    )?;
    for p in docs {
        let alloc: Vec<String> = p
            .allocated
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            out,
            "{:<16} {:>6} {:>7} {:>6.3}  {}",
            p.name,
            p.weight,
            p.queued,
            p.dominant_share,
            alloc.join(",")
        )?;
    }
    Ok(())
}

pub(crate) fn nodes(c: &Client, json_out: bool, out: &mut impl Write) -> Result<(), Failure> {
    let docs = c.nodes()?;
    if json_out {
        writeln!(out, "{}", json!({ "items": docs }))?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<9} {:<6} ALLOCATED / ALLOCATABLE",
        "NAME", "KIND", "READY"
    )?;
    for n in docs {
        let f = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        writeln!(
            out,
            "{:<20} {:<9} {:<6} {} / {}",
            n.name,
            n.kind,
            n.ready,
            f(&n.allocated),
            f(&n.allocatable)
        )?;
    }
    Ok(())
}

/// `qm cluster`: the members (name, API address, ready, leading, lease), the leader, the store.
pub(crate) fn cluster(c: &Client, json_out: bool, out: &mut impl Write) -> Result<(), Failure> {
    let doc = c.cluster()?;
    if json_out {
        writeln!(out, "{}", qm_proto::to_json(&doc))?;
        return Ok(());
    }
    writeln!(
        out,
        "store {}, leader {}, {} member(s)",
        doc.store,
        doc.leader.as_deref().unwrap_or("(none elected)"),
        doc.members.len()
    )?;
    writeln!(
        out,
        "{:<20} {:<6} {:<7} {:<26} URL",
        "NAME", "READY", "LEADER", "LEASE EXPIRES"
    )?;
    for m in &doc.members {
        writeln!(
            out,
            "{:<20} {:<6} {:<7} {:<26} {}",
            m.name,
            m.ready,
            m.leader,
            m.lease_expires_at.as_deref().unwrap_or("-"),
            m.url
        )?;
    }
    Ok(())
}

/// `qm export`: the state document as JSON, or age-encrypted (armored) to `encrypt_to`.
pub(crate) fn export(
    c: &Client,
    file: Option<&std::path::Path>,
    encrypt_to: &[String],
    out: &mut impl Write,
) -> Result<(), Failure> {
    let recipients = crate::encryption::recipients(encrypt_to)?;
    let mut doc = c.export()?.into_bytes();
    doc.push(b'\n');
    if !recipients.is_empty() {
        doc = crate::encryption::encrypt(&doc, &recipients)?;
    }
    match file {
        Some(path) => std::fs::write(path, doc).map_err(|e| Failure {
            code: 1,
            message: format!("cannot write {}: {e}", path.display()),
        }),
        None => {
            out.write_all(&doc)?;
            Ok(())
        }
    }
}

/// `qm import`: a state document, decrypted with `identity` when it is an age file.
pub(crate) fn import(
    c: &Client,
    file: &std::path::Path,
    identity: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| Failure {
        code: 2,
        message: format!("cannot read {}: {e}", file.display()),
    })?;
    let doc = crate::encryption::open(bytes, file, identity)?;
    c.import(&doc)?;
    Ok(())
}
