//! The agent and fleet client commands: `qm agents ls|get|spawn|stop|logs`, `qm fleets
//! ls|get|delete|scale|metric`, and `qm apply -f FILE`, which creates or updates the pools,
//! agents and fleets a TOML file describes. Tables for people, `-o json` for scripts; exit codes
//! as in the CLI contract (1 refused, 2 invalid input, 3 daemon unreachable).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use qm_client::{Client, ClientError};
use qm_proto::{
    AgentDoc, AgentList, AgentSpec, FleetDoc, FleetList, FleetSpec, HealthWire, PoolWrite,
    WireResources, to_json,
};
use serde_json::{Value, json};

use crate::client::Failure;

/// `qm agents ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AgentsCmd {
    /// List agents
    Ls,
    /// Show one agent
    Get { id: String },
    /// Spawn an agent: `qm agents spawn --name N [...] -- CMD [ARGS...]`
    Spawn(Box<SpawnArgs>),
    /// Stop an agent: SIGTERM, then SIGKILL after the grace period; waits for it to end
    Stop {
        id: String,
        /// Seconds between SIGTERM and SIGKILL [default: the agent's, 10]
        #[arg(long, value_name = "S")]
        grace: Option<f64>,
        /// Return at once instead of waiting for the agent to end
        #[arg(long)]
        no_wait: bool,
    },
    /// Print an agent's last output lines (stdout, or stderr with --stderr)
    Logs {
        id: String,
        /// Lines from the end
        #[arg(long, default_value_t = 100, value_name = "N")]
        tail: usize,
        /// Stderr instead of stdout
        #[arg(long)]
        stderr: bool,
    },
}

/// `qm agents spawn` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct SpawnArgs {
    /// The agent's name (also its id): 1..128 of [A-Za-z0-9._-]
    #[arg(long)]
    name: String,
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
    /// When to restart it [default: on-failure]
    #[arg(long, value_parser = ["never", "on-failure", "always"])]
    restart: Option<String>,
    /// An environment variable (repeatable)
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Health check: healthy while this URL answers 2xx or 3xx
    #[arg(long, value_name = "URL")]
    health_http: Option<String>,
    /// Refuse instead of waiting in the queue when it does not fit now
    #[arg(long)]
    no_queue: bool,
    /// The program and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `qm fleets ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FleetsCmd {
    /// List fleets
    Ls,
    /// Show one fleet
    Get { name: String },
    /// Delete a fleet, stopping its members
    Delete { name: String },
    /// Set a fleet's replicas (template and autoscaler unchanged)
    Scale { name: String, replicas: u32 },
    /// Push the custom metric a fleet's autoscaler scales on
    Metric {
        name: String,
        #[arg(allow_negative_numbers = true)]
        value: f64,
    },
}

/// `qm apply` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// The TOML file: [[pools]], [[agents]], [[fleets]]
    #[arg(long, short = 'f', value_name = "FILE")]
    file: PathBuf,
}

/// `--env K=V`: the name is not empty and holds no `=`; the value may.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn agents_table(out: &mut impl Write, items: &[AgentDoc]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<9} {:>8} {:>8} {:<9} {:>8} {:>10}  REASON",
        "ID", "STATE", "PID", "RESTARTS", "HEALTH", "CPU", "MEM"
    )?;
    for a in items {
        let usage = |r: &str| dash(a.usage.as_ref().and_then(|u| u.get(r)));
        writeln!(
            out,
            "{:<24} {:<9} {:>8} {:>8} {:<9} {:>8} {:>10}  {}",
            a.id,
            a.state,
            dash(a.pid),
            a.restarts,
            a.health,
            usage("cpu"),
            usage("memory"),
            a.reason.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

fn pairs(m: &BTreeMap<String, Value>) -> String {
    let v: Vec<String> = m
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    v.join(",")
}

fn agent_detail(out: &mut impl Write, a: &AgentDoc) -> std::io::Result<()> {
    let usage = a.usage.as_ref().map(|u| {
        u.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let rows: [(&str, String); 17] = [
        ("id", a.id.clone()),
        ("state", a.state.to_string()),
        ("reason", dash(a.reason.as_ref())),
        ("pid", dash(a.pid)),
        ("adopted", a.adopted.to_string()),
        (
            "command",
            dash(a.spec.command.as_ref().map(|c| c.join(" "))),
        ),
        ("allocation", dash(a.allocation.as_ref())),
        (
            "pool",
            a.spec.pool.clone().unwrap_or_else(|| "default".into()),
        ),
        ("resources", pairs(&a.spec.resources)),
        ("usage", dash(usage)),
        ("qos", dash(a.qos.as_ref())),
        ("health", a.health.clone()),
        (
            "restarts",
            format!(
                "{}{}",
                a.restarts,
                if a.crash_loop { " (crash loop)" } else { "" }
            ),
        ),
        (
            "exit",
            match (a.exit_code, a.signal) {
                (_, Some(s)) => format!("signal {s}{}", if a.oom_killed { " (oom)" } else { "" }),
                (Some(c), None) => format!("code {c}"),
                (None, None) => "-".to_owned(),
            },
        ),
        ("fleet", dash(a.fleet.as_ref())),
        ("started", dash(a.started_at.as_ref())),
        ("ended", dash(a.ended_at.as_ref())),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<11} {v}")?;
    }
    Ok(())
}

fn autoscale_cell(f: &FleetDoc) -> String {
    f.autoscale.as_ref().map_or_else(
        || "-".to_owned(),
        |a| {
            let ahead = a
                .predictive
                .as_ref()
                .map_or_else(String::new, |p| format!(" +{}s", p.horizon_s));
            format!("{} {} [{}..{}]{ahead}", a.metric, a.target, a.min, a.max)
        },
    )
}

fn fleets_table(out: &mut impl Write, items: &[FleetDoc]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:>8} {:>5} {:<24} {:>8}  MEMBERS",
        "NAME", "REPLICAS", "READY", "AUTOSCALE", "METRIC"
    )?;
    for f in items {
        writeln!(
            out,
            "{:<20} {:>8} {:>5} {:<24} {:>8}  {}",
            f.name,
            f.replicas,
            f.ready,
            autoscale_cell(f),
            dash(f.metric),
            f.members.join(",")
        )?;
    }
    Ok(())
}

fn spawn_spec(a: SpawnArgs) -> AgentSpec {
    let mut resources = WireResources::new();
    for (k, v) in [("cpu", a.cpu), ("memory", a.memory), ("gpu", a.gpu)] {
        if let Some(v) = v {
            resources.insert(k.to_owned(), Value::String(v));
        }
    }
    AgentSpec {
        name: a.name,
        command: Some(a.command),
        env: (!a.env.is_empty()).then(|| a.env.into_iter().collect()),
        cwd: a.cwd,
        pool: a.pool,
        priority: a.priority,
        resources,
        restart: a.restart,
        health: a.health_http.map(|u| HealthWire {
            http: Some(u),
            ..HealthWire::default()
        }),
        queue: a.no_queue.then_some(false),
        ..AgentSpec::default()
    }
}

/// Polls until the agent has ended or `within` has passed; answers its last state.
fn wait_ended(c: &Client, mut doc: AgentDoc, within: Duration) -> Result<AgentDoc, ClientError> {
    let deadline = Instant::now() + within;
    while doc.state.is_live() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        doc = c.agent(&doc.id)?;
    }
    Ok(doc)
}

pub(crate) fn agents(
    c: &Client,
    cmd: AgentsCmd,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match cmd {
        AgentsCmd::Ls => {
            let items = c.agents()?;
            if json_out {
                writeln!(out, "{}", to_json(&AgentList { items }))?;
            } else {
                agents_table(out, &items)?;
            }
        }
        AgentsCmd::Get { id } => {
            let doc = c.agent(&id)?;
            if json_out {
                writeln!(out, "{}", to_json(&doc))?;
            } else {
                agent_detail(out, &doc)?;
            }
        }
        AgentsCmd::Spawn(a) => {
            let (_, doc) = c.create_agent(&spawn_spec(*a))?;
            if json_out {
                writeln!(out, "{}", to_json(&doc))?;
            } else {
                writeln!(out, "{} {}", doc.id, doc.state)?;
            }
        }
        AgentsCmd::Stop { id, grace, no_wait } => {
            let mut doc = c.stop_agent(&id, grace)?;
            if !no_wait {
                let grace_s = grace.or(doc.spec.grace_s).unwrap_or(10.0);
                let within = Duration::from_secs_f64(grace_s.clamp(0.0, 3600.0) + 5.0);
                doc = wait_ended(c, doc, within)?;
            }
            if json_out {
                writeln!(out, "{}", to_json(&doc))?;
            } else {
                agents_table(out, std::slice::from_ref(&doc))?;
            }
            if !no_wait && doc.state.is_live() {
                return Err(Failure {
                    code: 1,
                    message: format!("agent {id} has not ended yet (state {})", doc.state),
                });
            }
        }
        AgentsCmd::Logs { id, tail, stderr } => {
            let logs = c.agent_logs(&id, tail)?;
            if json_out {
                writeln!(out, "{}", to_json(&logs))?;
            } else {
                for line in if stderr { &logs.stderr } else { &logs.stdout } {
                    writeln!(out, "{line}")?;
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn fleets(
    c: &Client,
    cmd: FleetsCmd,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let (items, list) = match cmd {
        FleetsCmd::Ls => (c.fleets()?, true),
        FleetsCmd::Get { name } => {
            let f = c.fleet(&name)?;
            if !json_out {
                fleets_table(out, std::slice::from_ref(&f))?;
                let command = f.template.command.as_ref().map(|c| c.join(" "));
                writeln!(out, "\ntemplate   {}", dash(command))?;
                writeln!(out, "resources  {}", pairs(&f.template.resources))?;
                writeln!(out, "generation {}", f.generation)?;
                writeln!(out, "last scale {}", dash(f.last_scale.as_ref()))?;
                return Ok(());
            }
            (vec![f], false)
        }
        FleetsCmd::Delete { name } => (vec![c.delete_fleet(&name)?], false),
        FleetsCmd::Scale { name, replicas } => {
            let f = c.fleet(&name)?;
            if f.autoscale.is_some() {
                eprintln!("qm: fleet {name} has an autoscaler: it may change the replicas again");
            }
            let spec = FleetSpec {
                name: f.name,
                template: f.template,
                replicas,
                autoscale: f.autoscale,
                vertical: f.vertical,
            };
            (vec![c.update_fleet(&spec)?], false)
        }
        FleetsCmd::Metric { name, value } => (vec![c.push_fleet_metric(&name, value)?], false),
    };
    if json_out && list {
        writeln!(out, "{}", to_json(&FleetList { items }))?;
    } else if json_out {
        for f in &items {
            writeln!(out, "{}", to_json(f))?;
        }
    } else {
        fleets_table(out, &items)?;
    }
    Ok(())
}

/// What an apply file holds, checked for shape (unknown fields, wrong types) but not yet
/// against the daemon.
#[derive(Debug, Default)]
struct Plan {
    /// Each pool's name and its `PoolWrite` body.
    pools: Vec<(String, Value)>,
    agents: Vec<AgentSpec>,
    fleets: Vec<FleetSpec>,
}

/// Splits an apply file into its objects, or says everything wrong with it.
fn plan(text: &str) -> Result<Plan, Vec<String>> {
    let doc: Value = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1);
        let message = e.message().trim_end().to_owned();
        vec![match line {
            Some(n) => format!("line {n}: {message}"),
            None => message,
        }]
    })?;
    let Value::Object(top) = doc else {
        return Err(vec!["expected a table at the top".to_owned()]);
    };
    let mut errors = Vec::new();
    let mut plan = Plan::default();
    for (key, value) in top {
        let kind = match key.as_str() {
            "pools" => "pool",
            "agents" => "agent",
            "fleets" => "fleet",
            _ => {
                errors.push(format!(
                    "unknown key `{key}` (known: pools, agents, fleets)"
                ));
                continue;
            }
        };
        let Value::Array(items) = value else {
            errors.push(format!("{key}: must be an array of tables ([[{key}]])"));
            continue;
        };
        for (i, mut item) in items.into_iter().enumerate() {
            let name = item.get("name").and_then(Value::as_str).map(str::to_owned);
            let label = match &name {
                Some(n) => format!("{kind} {n}"),
                None => format!("{key}[{i}]"),
            };
            if !item.is_object() {
                errors.push(format!("{label}: must be a table"));
                continue;
            }
            let body = item.to_string();
            match kind {
                "pool" => match (qm_proto::decode::<PoolWrite>(body.as_bytes()), name) {
                    (Ok(_), Some(n)) => plan.pools.push((n, item)),
                    (Ok(_), None) => errors.push(format!("{label}: name: required")),
                    (Err(e), _) => errors.push(format!("{label}: {e}")),
                },
                "agent" => match qm_proto::decode::<AgentSpec>(body.as_bytes()) {
                    Ok(spec) => plan.agents.push(spec),
                    Err(e) => errors.push(format!("{label}: {e}")),
                },
                _ => {
                    // the template's name is ignored (members are `<fleet>-<n>`): not required
                    if let (Some(n), Some(Value::Object(t))) = (&name, item.get_mut("template")) {
                        t.entry("name").or_insert_with(|| json!(n));
                    }
                    match qm_proto::decode::<FleetSpec>(item.to_string().as_bytes()) {
                        Ok(spec) => plan.fleets.push(spec),
                        Err(e) => errors.push(format!("{label}: {e}")),
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// What became of one object of an apply file.
#[derive(Debug)]
struct Outcome {
    kind: &'static str,
    name: String,
    result: Result<String, Failure>,
}

/// A refusal keeps its exit code (2 for invalid, 1 otherwise); the daemon going away stops
/// the whole apply.
fn settle(
    kind: &'static str,
    name: &str,
    r: Result<String, ClientError>,
) -> Result<Outcome, Failure> {
    let result = match r {
        Ok(s) => Ok(s),
        Err(e @ (ClientError::Unreachable { .. } | ClientError::Untrusted { .. })) => {
            return Err(e.into());
        }
        Err(e) => Err(Failure::from(e)),
    };
    Ok(Outcome {
        kind,
        name: name.to_owned(),
        result,
    })
}

fn execute(c: &Client, plan: Plan) -> Result<Vec<Outcome>, Failure> {
    let mut done = Vec::new();
    if !plan.pools.is_empty() {
        let existing = c.pools()?;
        for (name, body) in &plan.pools {
            let r = if existing.iter().any(|p| &p.name == name) {
                c.put_pool(name, body).map(|_| "updated".to_owned())
            } else {
                c.create_pool(body).map(|_| "created".to_owned())
            };
            done.push(settle("pool", name, r)?);
        }
    }
    if !plan.agents.is_empty() {
        let existing = c.agents()?;
        for spec in &plan.agents {
            let r = match existing.iter().find(|a| a.name == spec.name) {
                Some(a) if a.state.is_live() => Ok(format!("unchanged ({})", a.state)),
                _ => c.create_agent(spec).map(|(status, doc)| match status {
                    202 => format!("created ({})", doc.state),
                    _ => "created".to_owned(),
                }),
            };
            done.push(settle("agent", &spec.name, r)?);
        }
    }
    if !plan.fleets.is_empty() {
        let existing = c.fleets()?;
        for spec in &plan.fleets {
            let r = match existing.iter().find(|f| f.name == spec.name) {
                Some(f)
                    if f.template == spec.template
                        && f.autoscale == spec.autoscale
                        && f.replicas == spec.replicas =>
                {
                    Ok("unchanged".to_owned())
                }
                Some(_) => c.update_fleet(spec).map(|_| "updated".to_owned()),
                None => c.create_fleet(spec).map(|_| "created".to_owned()),
            };
            done.push(settle("fleet", &spec.name, r)?);
        }
    }
    Ok(done)
}

/// One line per object: `pool default: created` to `out`, failures to `err`.
fn report(
    outcomes: &[Outcome],
    json_out: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    if json_out {
        let items: Vec<Value> = outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(r) => json!({ "kind": o.kind, "name": o.name, "result": r }),
                Err(f) => json!({ "kind": o.kind, "name": o.name, "error": f.message }),
            })
            .collect();
        return writeln!(out, "{}", json!({ "items": items }));
    }
    for o in outcomes {
        match &o.result {
            Ok(r) => writeln!(out, "{} {}: {r}", o.kind, o.name)?,
            Err(f) => writeln!(err, "qm: {} {}: {}", o.kind, o.name, f.message)?,
        }
    }
    Ok(())
}

pub(crate) fn apply(
    c: &Client,
    args: &ApplyArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let path = args.file.display();
    let text = std::fs::read_to_string(&args.file).map_err(|e| Failure {
        code: 2,
        message: format!("cannot read {path}: {e}"),
    })?;
    let plan = plan(&text).map_err(|errors| Failure {
        code: 2,
        message: errors
            .iter()
            .map(|e| format!("{path}: {e}"))
            .collect::<Vec<_>>()
            .join("\nqm: "),
    })?;
    let outcomes = execute(c, plan)?;
    report(&outcomes, json_out, out, &mut std::io::stderr().lock())?;
    let failed: Vec<&Failure> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    match failed.iter().map(|f| f.code).max() {
        None => Ok(()),
        Some(code) => Err(Failure {
            code,
            message: format!("{} of {} objects failed", failed.len(), outcomes.len()),
        }),
    }
}

/// `qm recommend [TARGET]`: what each agent and fleet should request, learned from its usage.
pub(crate) fn recommend(
    c: &qm_client::Client,
    target: Option<&str>,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let path = match target {
        Some(t) => format!("/v1/recommendations?target={t}"),
        None => "/v1/recommendations".to_owned(),
    };
    let (_, v) = c.request("GET", &path, None)?;
    let list: qm_proto::RecommendationList =
        serde_json::from_value(v.clone()).map_err(|e| Failure {
            code: 1,
            message: format!("the daemon's answer: {e}"),
        })?;
    if json_out {
        writeln!(out, "{v}")?;
        return Ok(());
    }
    if list.items.is_empty() {
        writeln!(
            out,
            "no recommendations yet: each target needs [recommender] min_samples collections of its usage"
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:>8} {:>9} {:>18} {:>18} {:>8} {:>5}",
        "TARGET", "CPU", "MEMORY", "LOWER", "UPPER", "SAMPLES", "CONF"
    )?;
    let pair = |m: &std::collections::BTreeMap<String, String>| {
        format!(
            "{}/{}",
            m.get("cpu").map_or("-", String::as_str),
            m.get("memory").map_or("-", String::as_str)
        )
    };
    for r in &list.items {
        writeln!(
            out,
            "{:<28} {:>8} {:>9} {:>18} {:>18} {:>8} {:>4.0}%",
            r.target,
            r.resources.get("cpu").map_or("-", String::as_str),
            r.resources.get("memory").map_or("-", String::as_str),
            pair(&r.lower),
            pair(&r.upper),
            r.samples,
            r.confidence * 100.0
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Agents {
        #[command(subcommand)]
        cmd: AgentsCmd,
    }

    #[test]
    fn env_takes_k_equals_v() {
        assert_eq!(parse_env("A=1"), Ok(("A".into(), "1".into())));
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=1").unwrap_err().contains("K=V"));
        assert!(parse_env("A").is_err());
    }

    #[test]
    fn spawn_flags_make_a_spec() {
        let args = "qm spawn --name c1 --cpu 100m --env A=1 --env B=x=y --restart never --no-queue -- sleep 30"
            .split(' ');
        let AgentsCmd::Spawn(a) = Agents::try_parse_from(args).unwrap().cmd else {
            panic!("not spawn");
        };
        let spec = spawn_spec(*a);
        assert_eq!(
            spec.command,
            Some(vec!["sleep".to_owned(), "30".to_owned()])
        );
        assert_eq!(spec.resources.get("cpu"), Some(&json!("100m")));
        assert_eq!(
            spec.env
                .as_ref()
                .and_then(|e| e.get("B"))
                .map(String::as_str),
            Some("x=y")
        );
        assert_eq!(
            (spec.restart.as_deref(), spec.queue),
            (Some("never"), Some(false))
        );
        assert!(spec.problems("").is_empty(), "{:?}", spec.problems(""));
        // a bad --env or --restart, or no command, is a usage error
        for bad in [
            "qm spawn --name c1 --env A -- x",
            "qm spawn --name c1 --restart sometimes -- x",
            "qm spawn --name c1",
        ] {
            let err = Agents::try_parse_from(bad.split(' ')).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    const FILE: &str = r#"
[[pools]]
name = "research"
weight = 2
guaranteed = { cpu = "1" }

[[agents]]
name = "solo"
command = ["sleep", "30"]
resources = { cpu = "100m", memory = "32Mi" }

[[fleets]]
name = "coders"
replicas = 2
[fleets.template]
command = ["sleep", "30"]
resources = { cpu = 0.1, memory = 33554432 }
[fleets.autoscale]
min = 1
max = 4
metric = "custom"
target = 0.5
"#;

    #[test]
    fn an_apply_file_splits_into_objects() {
        let p = plan(FILE).unwrap();
        assert_eq!(p.pools.len(), 1);
        assert_eq!(p.pools[0].0, "research");
        assert_eq!(p.pools[0].1["weight"], json!(2));
        assert_eq!(p.agents[0].name, "solo");
        assert_eq!(p.agents[0].resources.get("memory"), Some(&json!("32Mi")));
        let f = &p.fleets[0];
        assert_eq!((f.name.as_str(), f.replicas), ("coders", 2));
        assert_eq!(
            f.template.name, "coders",
            "the template's name is filled in"
        );
        assert_eq!(f.template.resources.get("cpu"), Some(&json!(0.1)));
        assert_eq!(f.autoscale.as_ref().map(|a| a.max), Some(4));
        assert!(f.problems().is_empty(), "{:?}", f.problems());
    }

    #[test]
    fn a_bad_apply_file_names_what_is_wrong() {
        let errors = plan("[[agents]]\nname = \"a\"\ncommand = [\"x\"]\ncolour = 1\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("agent a: colour: unknown field `colour`"),
            "{errors:?}"
        );
        let errors = plan("[[robots]]\nname = \"r\"\n").unwrap_err();
        assert_eq!(
            errors,
            ["unknown key `robots` (known: pools, agents, fleets)"]
        );
        let errors = plan("weight = 3\n").unwrap_err();
        assert!(errors[0].contains("unknown key `weight`"), "{errors:?}");
        let errors = plan("pools = 3\n").unwrap_err();
        assert!(errors[0].contains("[[pools]]"), "{errors:?}");
        let errors = plan("[[pools]]\nweight = 3\n").unwrap_err();
        assert_eq!(errors, ["pools[0]: name: required"]);
        let errors = plan("[[pools]]\nname = \"p\"\nsize = 3\n").unwrap_err();
        assert!(
            errors[0].starts_with("pool p: size: unknown field"),
            "{errors:?}"
        );
        let errors =
            plan("[[fleets]]\nname = \"f\"\nreplicas = -1\n[fleets.template]\ncommand = [\"x\"]\n")
                .unwrap_err();
        assert!(errors[0].starts_with("fleet f: replicas"), "{errors:?}");
        let errors = plan("[[agents]]\nname = \"a\"\n\ncommand = [\"x\"\n").unwrap_err();
        assert!(errors[0].starts_with("line 4: "), "{errors:?}");
    }

    #[test]
    fn tables_line_up() {
        let a = AgentDoc {
            id: "coder-1".into(),
            name: "coder-1".into(),
            pid: Some(4242),
            state: qm_proto::AgentState::Running,
            health: "healthy".into(),
            usage: Some(BTreeMap::from([
                ("cpu".into(), "12m".into()),
                ("memory".into(), "3Mi".into()),
            ])),
            ..AgentDoc::default()
        };
        let b = AgentDoc {
            id: "coder-2".into(),
            state: qm_proto::AgentState::Pending,
            health: "unknown".into(),
            reason: Some("waiting for admission".into()),
            ..AgentDoc::default()
        };
        let mut out = Vec::new();
        agents_table(&mut out, &[a, b]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ID                       STATE          PID RESTARTS HEALTH         CPU        MEM  REASON",
                "coder-1                  running       4242        0 healthy        12m        3Mi  ",
                "coder-2                  pending          -        0 unknown          -          -  waiting for admission",
            ]
        );
        let f = FleetDoc {
            name: "coders".into(),
            replicas: 2,
            members: vec!["coders-0".into(), "coders-1".into()],
            ready: 1,
            template: AgentSpec::default(),
            autoscale: None,
            metric: None,
            last_scale: None,
            generation: 0,
            vertical: None,
        };
        let mut out = Vec::new();
        fleets_table(&mut out, &[f]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some(
                "coders                      2     1 -                               -  coders-0,coders-1"
            )
        );
    }

    #[test]
    fn apply_reports_one_line_per_object() {
        let outcomes = [
            Outcome {
                kind: "pool",
                name: "default".into(),
                result: Ok("created".into()),
            },
            Outcome {
                kind: "agent",
                name: "a".into(),
                result: Err(Failure {
                    code: 2,
                    message: "resources.cpu: \"-1\" is negative".into(),
                }),
            },
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        report(&outcomes, false, &mut out, &mut err).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "pool default: created\n");
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "qm: agent a: resources.cpu: \"-1\" is negative\n"
        );
    }
}
