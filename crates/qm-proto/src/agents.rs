//! Wire types of agents and fleets (`/v1/agents`, `/v1/fleets`): what a client sends to spawn
//! or adopt an agent, the agent as the API shows it, and fleets with their autoscaler. The
//! checks that need no state (names, commands, numbers) are here and name every bad field;
//! quantities are checked when the allocation request is built from the spec.

use std::collections::BTreeMap;

use qm_core::Labels;
use serde::{Deserialize, Serialize};

use crate::{AllocationRequest, FieldProblem, WireResources};

/// A health check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthWire {
    /// `http://127.0.0.1:9000/health`: healthy on a 2xx or 3xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A command: healthy when it exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// The agent calls `POST /v1/agents/{id}/heartbeat` at least this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_s: Option<f64>,
}

/// `POST /v1/agents`: spawn `command`, or adopt the running `pid`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// 1..128 of [A-Za-z0-9._-]; also the agent's id.
    pub name: String,
    /// The program and its arguments (spawn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A running process to adopt instead of spawning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::decode::integer"
    )]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub resources: WireResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<WireResources>,
    /// `never` (default for adopted processes), `on-failure` (default), `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// Wait in the pool's queue when it does not fit now (default true for spawns; adoption
    /// never queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<bool>,
    /// Adopt under this existing allocation instead of requesting one (`qm exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<String>,
    /// Labels the node must have (`qm.dev/node`, `topology.qm.dev/zone`, ...): in a cluster,
    /// where the leader may place it; on its own, a daemon runs it only if its node matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Labels>,
    /// Spread constraints for its allocation (as `POST /v1/allocations` takes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Vec<crate::SpreadWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<crate::TermWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<Vec<crate::TermWire>>,
    /// Seconds between SIGTERM and SIGKILL when stopped (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<f64>,
    /// The user (name or uid) a spawned agent runs as (default: `[agents] user`, `nobody`);
    /// uid 0 only for an admin's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The agent's own token may spawn sub-agents `<name>.<suffix>` (an orchestrator).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spawn: bool,
}

/// What stands in for a redacted secret.
pub const REDACTED: &str = "<redacted>";

impl AgentSpec {
    /// Hides the values of `env` (its names stay), for callers who may not see secrets.
    pub fn redact(&mut self) {
        if let Some(env) = &mut self.env {
            for v in env.values_mut() {
                REDACTED.clone_into(v);
            }
        }
    }
}

/// A name as agents and fleets take it: 1..=128 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

fn seconds(errors: &mut Vec<FieldProblem>, field: &str, v: Option<f64>, max: f64) {
    if let Some(v) = v
        && !(v.is_finite() && v > 0.0 && v <= max)
    {
        errors.push(FieldProblem::new(
            field,
            format!("{v} is not a number of seconds in (0, {max}]"),
        ));
    }
}

impl AgentSpec {
    /// Every invalid field of the parts that need no state.
    pub fn problems(&self, prefix: &str) -> Vec<FieldProblem> {
        let mut errors = Vec::new();
        let f = |name: &str| format!("{prefix}{name}");
        if !valid_name(&self.name) {
            errors.push(FieldProblem::new(
                &f("name"),
                format!("{:?} is not 1..128 of [A-Za-z0-9._-]", self.name),
            ));
        }
        match (&self.command, self.pid) {
            (Some(_), Some(_)) => errors.push(FieldProblem::new(
                &f("pid"),
                "give command (spawn) or pid (adopt), not both",
            )),
            (None, None) => errors.push(FieldProblem::new(
                &f("command"),
                "required: the program to run (or pid, to adopt a running process)",
            )),
            (Some(c), None) if c.first().is_none_or(String::is_empty) => {
                errors.push(FieldProblem::new(
                    &f("command"),
                    "must name a program: [\"node\", \"agent.js\"]",
                ));
            }
            (Some(c), None) if c.iter().any(|a| a.contains('\0')) => {
                errors.push(FieldProblem::new(&f("command"), "contains a NUL byte"));
            }
            (None, Some(0)) => errors.push(FieldProblem::new(&f("pid"), "must be positive")),
            _ => {}
        }
        if let Some(env) = &self.env {
            for k in env.keys() {
                if k.is_empty() || k.contains(['=', '\0']) {
                    errors.push(FieldProblem::new(
                        &f("env"),
                        format!("{k:?} is not a variable name"),
                    ));
                }
            }
        }
        if let Some(r) = &self.restart
            && !["never", "on-failure", "always"].contains(&r.as_str())
        {
            errors.push(FieldProblem::new(
                &f("restart"),
                format!("{r:?} is not never, on-failure or always"),
            ));
        }
        seconds(&mut errors, &f("grace_s"), self.grace_s, 3600.0);
        if let Some(h) = &self.health {
            let kinds = usize::from(h.http.is_some())
                + usize::from(h.exec.is_some())
                + usize::from(h.heartbeat_s.is_some());
            if kinds != 1 {
                errors.push(FieldProblem::new(
                    &f("health"),
                    "give exactly one of http, exec, heartbeat_s",
                ));
            }
            if let Some(u) = &h.http
                && !u.starts_with("http://")
            {
                errors.push(FieldProblem::new(
                    &f("health.http"),
                    format!("{u:?} is not an http:// URL"),
                ));
            }
            if h.exec
                .as_ref()
                .is_some_and(|e| e.first().is_none_or(String::is_empty))
            {
                errors.push(FieldProblem::new(&f("health.exec"), "must name a program"));
            }
            seconds(
                &mut errors,
                &f("health.heartbeat_s"),
                h.heartbeat_s,
                86_400.0,
            );
            seconds(&mut errors, &f("health.period_s"), h.period_s, 86_400.0);
            seconds(&mut errors, &f("health.timeout_s"), h.timeout_s, 3600.0);
            if let Some(d) = h.initial_delay_s
                && !(d.is_finite() && (0.0..=86_400.0).contains(&d))
            {
                errors.push(FieldProblem::new(
                    &f("health.initial_delay_s"),
                    format!("{d} is not a number of seconds in [0, 86400]"),
                ));
            }
            if h.failure_threshold.is_some_and(|t| !(1..=100).contains(&t)) {
                errors.push(FieldProblem::new(
                    &f("health.failure_threshold"),
                    "must be 1..=100",
                ));
            }
        }
        if self.pid.is_some() && self.queue == Some(true) {
            errors.push(FieldProblem::new(
                &f("queue"),
                "an adopted process is running already: it cannot wait in a queue",
            ));
        }
        errors
    }

    /// The allocation request an agent's admission makes.
    pub fn allocation_request(&self) -> AllocationRequest {
        AllocationRequest {
            agent: self.name.clone(),
            resources: self.resources.clone(),
            limits: self.limits.clone(),
            pool: self.pool.clone(),
            priority: self.priority,
            priority_class: self.priority_class.clone(),
            preemptible: None,
            ttl_s: None,
            queue: Some(self.pid.is_none() && self.queue.unwrap_or(true)),
            node_selector: self.node_selector.clone(),
            spread: self.spread.clone(),
            affinity: self.affinity.clone(),
            anti_affinity: self.anti_affinity.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// Where an agent is in its life.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Waiting for admission.
    #[default]
    Pending,
    /// Admitted; its process is being made.
    Starting,
    Running,
    /// Waiting to restart.
    Backoff,
    /// Ended by itself and not restarted.
    Exited,
    /// Could not start, or ended badly and not restarted.
    Failed,
    /// Stopped by the pressure responder (or its allocation preempted, expired or lost).
    Evicted,
    /// Stopped on request.
    Stopped,
}

impl AgentState {
    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Pending => "pending",
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::Backoff => "backoff",
            AgentState::Exited => "exited",
            AgentState::Failed => "failed",
            AgentState::Evicted => "evicted",
            AgentState::Stopped => "stopped",
        }
    }

    /// Whether the agent has not ended: pending, starting, running or waiting to restart.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            AgentState::Pending | AgentState::Starting | AgentState::Running | AgentState::Backoff
        )
    }
}

impl std::fmt::Display for AgentState {
    /// The API's spelling, padded as asked (`{:<9}` lines up a table).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentDoc {
    pub id: String,
    pub name: String,
    /// The root process; null while waiting for admission or a restart.
    pub pid: Option<u32>,
    /// The root process's start time in clock ticks after boot: with the pid, it identifies
    /// the process across pid reuse (a restarted daemon re-adopts by both).
    pub start_ticks: Option<u64>,
    pub state: AgentState,
    /// Spawned by quartermaster, or adopted.
    pub adopted: bool,
    pub allocation: Option<String>,
    pub restarts: u32,
    /// Restarted too often without a healthy run.
    pub crash_loop: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// OOM kills in the agent's group during this run (any of its processes, not only the
    /// main one, which `oom_killed` is about).
    #[serde(default)]
    pub oom_kills: u64,
    /// `unknown`, `healthy`, `unhealthy`.
    pub health: String,
    /// Why it is in its state, in words.
    pub reason: Option<String>,
    /// What it uses now (cpu, memory), from the monitor.
    pub usage: Option<BTreeMap<String, String>>,
    /// Its cgroup, relative to the cgroup mount.
    pub cgroup: Option<String>,
    pub qos: Option<String>,
    pub fleet: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub next_restart_at: Option<String>,
    /// The node it runs on (its member's, in a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Placed by the cluster's leader: the member owning `node` runs it, as etcd says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub placed: bool,
    pub spec: AgentSpec,
}

/// `GET /v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentList {
    pub items: Vec<AgentDoc>,
}

/// One target's right-sizing (`GET /v1/recommendations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecommendationDoc {
    /// `agent/NAME`, `fleet/NAME` or `template/NAME`.
    pub target: String,
    /// What to request (cpu, memory).
    pub resources: BTreeMap<String, String>,
    /// The memory limit (the OOM killer's line).
    pub limits: BTreeMap<String, String>,
    /// Below this it would be short most of the time.
    pub lower: BTreeMap<String, String>,
    /// This covers the worst seen, with a margin.
    pub upper: BTreeMap<String, String>,
    pub samples: u64,
    /// 0..1: how much history stands behind it.
    pub confidence: f64,
    pub updated_at: String,
    pub reason: String,
}

/// `GET /v1/recommendations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecommendationList {
    pub items: Vec<RecommendationDoc>,
}

/// `GET /v1/agents/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogsDoc {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// A fleet's autoscaler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleWire {
    pub min: u32,
    pub max: u32,
    /// `cpu` or `memory` (average utilisation of requests), or `custom` (pushed).
    pub metric: String,
    pub target: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_stabilization_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_stabilization_s: Option<f64>,
    /// Hysteresis: scale up only above `band[1]`, down only below `band[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<[f64; 2]>,
    /// Scale up ahead of the load's forecast (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictive: Option<PredictiveWire>,
}

/// Predictive scaling: the fleet's load (metric × replicas measured) is forecast with Holt's
/// double exponential smoothing `horizon_s` ahead, and the autoscaler scales up to what that
/// forecast asks for when it asks for more (scale-down stays reactive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictiveWire {
    /// Seconds ahead, 1 to 3600: how long a new member takes to become useful.
    pub horizon_s: f64,
    /// Level weight per observation (one a second), in (0, 1]; default 0.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Trend weight per observation, in (0, 1]; default 0.03.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
}

/// `POST /v1/fleets`, `PUT /v1/fleets/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    pub name: String,
    /// The members' spec; its `name` is ignored (members are `<fleet>-<n>`).
    pub template: AgentSpec,
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleWire>,
    /// Right-sizing of the members: `off` (default), `recommend` (recommendations only) or
    /// `auto` (each member resized in place, without a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalWire>,
}

/// A fleet's vertical scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerticalWire {
    /// `off`, `recommend` or `auto`.
    pub mode: String,
    /// Seconds between two resizes of one member (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval_s: Option<f64>,
}

impl FleetSpec {
    /// Every invalid field of the parts that need no state.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut errors = Vec::new();
        if !valid_name(&self.name) || self.name.len() > 100 {
            errors.push(FieldProblem::new(
                "name",
                format!("{:?} is not 1..100 of [A-Za-z0-9._-]", self.name),
            ));
        }
        let mut template = self.template.clone();
        template.name = format!("{}-0", self.name.get(..100).unwrap_or(&self.name));
        if template.pid.is_some() {
            errors.push(FieldProblem::new(
                "template.pid",
                "a fleet spawns its members: give command",
            ));
        }
        errors.extend(template.problems("template."));
        if self.replicas > 10_000 {
            errors.push(FieldProblem::new("replicas", "must be at most 10000"));
        }
        if let Some(v) = &self.vertical {
            if !["off", "recommend", "auto"].contains(&v.mode.as_str()) {
                errors.push(FieldProblem::new(
                    "vertical.mode",
                    format!("{:?} is not off, recommend or auto", v.mode),
                ));
            }
            seconds(
                &mut errors,
                "vertical.min_interval_s",
                v.min_interval_s,
                86_400.0,
            );
        }
        errors
    }
}

/// A fleet as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetDoc {
    pub name: String,
    /// Desired members (the autoscaler's last decision when it has one).
    pub replicas: u32,
    /// Members not ended.
    pub members: Vec<String>,
    pub ready: u32,
    pub template: AgentSpec,
    pub autoscale: Option<AutoscaleWire>,
    /// The last metric value the autoscaler saw.
    pub metric: Option<f64>,
    /// The autoscaler's last reason, in words.
    pub last_scale: Option<String>,
    /// Template generation: members of an older one are rolled.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalWire>,
}

/// `GET /v1/fleets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetList {
    pub items: Vec<FleetDoc>,
}

/// `POST /v1/fleets/{name}/metric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricPush {
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_fields() {
        let spec = AgentSpec {
            name: "bad name".into(),
            command: Some(vec![]),
            restart: Some("sometimes".into()),
            grace_s: Some(-1.0),
            health: Some(HealthWire {
                http: Some("ftp://x".into()),
                heartbeat_s: Some(1.0),
                ..HealthWire::default()
            }),
            ..AgentSpec::default()
        };
        let fields: Vec<String> = spec.problems("").into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "command",
                "restart",
                "grace_s",
                "health",
                "health.http"
            ]
        );
        let ok = AgentSpec {
            name: "coder-1".into(),
            command: Some(vec!["sleep".into(), "1".into()]),
            ..AgentSpec::default()
        };
        assert!(ok.problems("").is_empty());
        assert_eq!(ok.allocation_request().queue, Some(true));
        let adopt = AgentSpec {
            name: "x".into(),
            pid: Some(42),
            ..AgentSpec::default()
        };
        assert_eq!(adopt.allocation_request().queue, Some(false));
        assert!(!valid_name("..") && !valid_name("") && valid_name("a.b_c-1"));
    }

    #[test]
    fn predictive_autoscale_round_trips_and_is_off_when_absent() {
        let off: AutoscaleWire =
            serde_json::from_str(r#"{"min":1,"max":4,"metric":"cpu","target":0.6}"#).unwrap();
        assert_eq!(off.predictive, None);
        assert!(!serde_json::to_string(&off).unwrap().contains("predictive"));
        let json = r#"{"min":1,"max":4,"metric":"cpu","target":0.6,"predictive":{"horizon_s":60.0,"beta":0.05}}"#;
        let on: AutoscaleWire = serde_json::from_str(json).unwrap();
        assert_eq!(
            on.predictive,
            Some(PredictiveWire {
                horizon_s: 60.0,
                alpha: None,
                beta: Some(0.05),
            })
        );
        assert_eq!(serde_json::to_string(&on).unwrap(), json);
        let unknown = r#"{"min":1,"max":4,"metric":"cpu","target":0.6,"predictive":{"horizon_s":60,"gamma":0.1}}"#;
        assert!(serde_json::from_str::<AutoscaleWire>(unknown).is_err());
    }
}
