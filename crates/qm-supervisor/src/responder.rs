//! The pressure responder: what the node does about memory (and cpu) pressure once admission
//! is gated (`Engine::admission`). It wakes with every collection that finds pressure (the
//! monitor's `pressure_wake`) and on the supervisor's tick, and acts in order:
//! - **warning**: an agent above its request whose own forecast says it will use up what the
//!   node has left within `forecast_horizon` (a leaker) is evicted before it gets there;
//! - **critical**: the first victim in Kubernetes' order (`qm_pressure::order`: agents above
//!   their request first, lowest priority first, a leaker before its peers, then by excess;
//!   guaranteed agents last) is evicted at once, and every other burstable or best-effort agent
//!   above its request is throttled (memory.high held at its usage, never below its request:
//!   the Senpai approach, v1's soft limit), so nothing grows into the room the eviction makes;
//!   one eviction per cooldown, judged again on fresh figures, so no more is evicted than needed;
//! - **critical cpu**, where `throttle_cpu` asks for it: burstable and best-effort agents above
//!   their cpu request are capped at it (cpu.max, at least 100m) until cpu pressure is gone.
//!   Off by default: the kernel already gives each agent its request under contention (cpu
//!   weights follow requests), so a cap only idles cores, and it slowed an important agent's
//!   start-up badly in `bench/pressure-vs-earlyoom.sh`;
//! - back to **ok**: throttles are lifted (the agent's own limits are written back).
//!
//! Throttling and lifting are published as `agent.throttled` and `agent.unthrottled` events.
//!
//! A victim is stopped with SIGTERM and SIGKILL after a short grace, recorded as `evicted`
//! with the reason, and its allocation ends `evicted`.

use std::collections::BTreeMap;
use std::time::Duration;

use qm_cgroup::Limits;
use qm_pressure::{Candidate, Level, Qos};
use qm_proto::AgentState;

use super::{Supervisor, now_ms};
use qm_monitor::pressure::{Eviction, LeakWatch, PressureReport};

/// How the responder acts.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponderConfig {
    /// Evict under critical memory pressure, and leakers at warning.
    pub evict: bool,
    /// Throttle agents above their memory request under critical memory pressure.
    pub throttle: bool,
    /// Cap agents above their cpu request under critical cpu pressure.
    pub throttle_cpu: bool,
    /// Time between two evictions: the next is chosen on fresh figures.
    pub cooldown: Duration,
    /// A victim's grace between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// At warning, an agent forecast to use up the node's memory within this is evicted
    /// (zero turns forecast evictions off).
    pub forecast_horizon: Duration,
    /// The least confidence (R² times window fill) a forecast needs to evict on.
    pub forecast_confidence: f64,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            evict: true,
            throttle: true,
            throttle_cpu: false,
            cooldown: Duration::from_secs(2),
            grace: Duration::from_secs(1),
            forecast_horizon: Duration::from_secs(60),
            forecast_confidence: 0.7,
        }
    }
}

/// The responder's memory between wakes.
#[derive(Debug, Default)]
pub(super) struct ResponderState {
    last_eviction_ms: u64,
    /// Throttled agents and their own limits, to write back.
    throttled: BTreeMap<String, Throttle>,
}

#[derive(Debug, Clone, Copy)]
struct Throttle {
    /// The agent's own limits.
    own: Limits,
    /// memory.high while memory is throttled.
    memory_high: Option<u64>,
    /// cpu.max (millicores) while cpu is throttled.
    cpu_max: Option<u64>,
}

impl Throttle {
    /// The agent's own limits with the throttles in force.
    fn limits(&self) -> Limits {
        Limits {
            memory_high: self.memory_high.or(self.own.memory_high),
            cpu_max_millis: self.cpu_max.or(self.own.cpu_max_millis),
            ..self.own
        }
    }
}

/// The smallest cpu cap the responder sets, in millicores.
const MIN_CPU_CAP_MILLIS: u64 = 100;

/// One agent, as the responder sees it.
struct Seen {
    candidate: Candidate,
    own: Option<Limits>,
    cpu_request_millis: u64,
    cpu_cores: f64,
}

impl Supervisor {
    fn seen(&self, latest: &qm_monitor::Latest, report: &PressureReport) -> Vec<Seen> {
        let Ok(agents) = self.inner.agents.lock() else {
            return Vec::new();
        };
        agents
            .values()
            .filter(|a| a.doc.state == AgentState::Running && a.stopping.is_none())
            .map(|a| {
                let own = a.confinement.as_ref().map(|c| c.0);
                let request = own.and_then(|l| l.memory_min).unwrap_or(0);
                let qos = match a.doc.qos.as_deref() {
                    Some("guaranteed") => Qos::Guaranteed,
                    Some("best-effort") => Qos::BestEffort,
                    _ => Qos::Burstable,
                };
                let id = &a.doc.id;
                Seen {
                    candidate: Candidate {
                        id: id.clone(),
                        qos,
                        priority: a.doc.spec.priority.unwrap_or(500),
                        usage_bytes: latest
                            .agent_value("qm_agent_memory_bytes", id)
                            .unwrap_or(0.0)
                            .max(0.0) as u64,
                        request_bytes: request,
                        exhaustion_in_s: report.agent(id).and_then(|t| t.exhaustion_in_s),
                    },
                    own,
                    // cpu.shares back to millicores (1024 shares per core)
                    cpu_request_millis: own
                        .and_then(|l| l.cpu_weight)
                        .map_or(0, |w| w * 1000 / 1024),
                    cpu_cores: latest
                        .agent_value("qm_agent_cpu_usage_cores", id)
                        .unwrap_or(0.0),
                }
            })
            .collect()
    }

    /// Acts on the monitor's last report; see the module documentation.
    pub(super) async fn respond(&self) {
        let Some(monitor) = self.engine().monitor().cloned() else {
            return;
        };
        let latest = monitor.latest();
        let Some(report) = latest.pressure.as_ref() else {
            return;
        };
        let level = |name| report.signal(name).map_or(Level::Ok, |s| s.level);
        let (memory, cpu) = (level("memory"), level("cpu"));
        let holding = self
            .inner
            .responder
            .lock()
            .map(|r| !r.throttled.is_empty())
            .unwrap_or(false);
        let cpu_matters = self.inner.config.responder.throttle_cpu && cpu == Level::Critical;
        if memory == Level::Ok && !cpu_matters && !holding {
            return;
        }
        let config = self.inner.config.responder.clone();
        let seen = self.seen(&latest, report);
        let victim = if config.evict {
            let collected_ms = latest.at_ms.unwrap_or_else(now_ms);
            self.evict_one(&config, report, memory, &seen, collected_ms)
                .await
        } else {
            None
        };
        if config.throttle || holding {
            // the victim is on its way out: throttling it too would only count twice
            let others: Vec<Seen> = seen
                .into_iter()
                .filter(|s| victim.as_deref() != Some(s.candidate.id.as_str()))
                .collect();
            self.throttle(&config, memory, cpu, &others);
        }
    }

    /// The agent to evict now, and why (`critical` or `forecast`), marking the cooldown.
    fn choose(
        &self,
        config: &super::ResponderConfig,
        report: &PressureReport,
        memory: Level,
        seen: &[Seen],
        now: u64,
    ) -> Option<(String, &'static str)> {
        // one victim at a time: the next is chosen once the last is gone
        let evicting = self.inner.agents.lock().ok()?.values().any(|a| {
            a.doc.state == AgentState::Running
                && a.stopping
                    .as_ref()
                    .is_some_and(|(s, _)| *s == AgentState::Evicted)
        });
        let mut state = self.inner.responder.lock().ok()?;
        if memory == Level::Ok
            || evicting
            || now < state.last_eviction_ms + config.cooldown.as_millis() as u64
        {
            return None;
        }
        // held at critical by hysteresis is not reason enough to evict again
        let at_critical = report.signal("memory").is_some_and(|s| s.at_critical);
        let horizon = config.forecast_horizon.as_secs_f64();
        // the same rule the monitor's fast path wakes on
        let watch = LeakWatch {
            horizon_s: horizon,
            confidence: config.forecast_confidence,
        };
        let leaker = |c: &&Candidate| {
            c.qos != Qos::Guaranteed
                && c.above_request()
                && report.agent(&c.id).is_some_and(|t| watch.acts_on(t))
        };
        let candidates: Vec<Candidate> = seen.iter().map(|s| s.candidate.clone()).collect();
        let chosen = match memory {
            Level::Critical if at_critical => qm_pressure::order(&candidates)
                .into_iter()
                .next()
                .map(|id| (id, "critical")),
            Level::Warning | Level::Critical if horizon > 0.0 => {
                let leakers: Vec<Candidate> = candidates.iter().filter(leaker).cloned().collect();
                qm_pressure::order(&leakers)
                    .into_iter()
                    .next()
                    .map(|id| (id, "forecast"))
            }
            _ => None,
        };
        if chosen.is_some() {
            state.last_eviction_ms = now;
        }
        chosen
    }

    /// Evicts the agent `choose` picks, if any; answers its id.
    async fn evict_one(
        &self,
        config: &super::ResponderConfig,
        report: &PressureReport,
        memory: Level,
        seen: &[Seen],
        collected_ms: u64,
    ) -> Option<String> {
        let now = now_ms();
        let signal = report.signal("memory")?;
        let (victim, why) = self.choose(config, report, memory, seen, now)?;
        let trend = report.agent(&victim);
        let mut reason = format!(
            "evicted under {} memory pressure ({:.0}% used",
            signal.level,
            signal.utilization * 100.0
        );
        if let Some(t) = trend.filter(|t| t.trend_per_s > 0.0 && t.exhaustion_in_s.is_some()) {
            reason.push_str(&format!(
                "; growing {:.1} MiB/s, forecast to exhaust the node's memory in {:.0} s",
                t.trend_per_s / 1048576.0,
                t.exhaustion_in_s.unwrap_or_default()
            ));
        } else if let Some(e) = signal.exhaustion_in_s {
            reason.push_str(&format!("; exhaustion forecast in {e:.0} s"));
        }
        reason.push(')');
        tracing::warn!(agent = %victim, %reason, "evicting");
        // its exit is recorded as `evicted` and published as `agent.evicted`
        let stopped = self
            .stop_as(
                &victim,
                Some(config.grace),
                AgentState::Evicted,
                reason.clone(),
            )
            .await;
        if stopped.is_err() {
            return None;
        }
        let response_ms = now_ms().saturating_sub(collected_ms);
        if let Some(m) = self.engine().monitor() {
            m.update_responder(|r| {
                if why == "critical" {
                    r.evictions_critical += 1;
                } else {
                    r.evictions_forecast += 1;
                }
                r.last_eviction = Some(Eviction {
                    agent: victim.clone(),
                    at_ms: now,
                    reason,
                    response_ms,
                });
            });
        }
        Some(victim)
    }

    /// Throttles at critical, lifts when the pressure is gone.
    fn throttle(&self, config: &super::ResponderConfig, memory: Level, cpu: Level, seen: &[Seen]) {
        let Ok(mut state) = self.inner.responder.lock() else {
            return;
        };
        // (agent, limits to write, whether this throttles (else lifts))
        let mut writes: Vec<(String, Limits, bool)> = Vec::new();
        let mut added = 0u64;
        let live: BTreeMap<&str, &Seen> =
            seen.iter().map(|s| (s.candidate.id.as_str(), s)).collect();
        // lift what is no longer needed (and forget agents that ended)
        state.throttled.retain(|id, t| {
            if !live.contains_key(id.as_str()) {
                return false;
            }
            let before = *t;
            if memory == Level::Ok {
                t.memory_high = None;
            }
            if cpu == Level::Ok {
                t.cpu_max = None;
            }
            if (t.memory_high, t.cpu_max) != (before.memory_high, before.cpu_max) {
                writes.push((id.clone(), t.limits(), false));
            }
            t.memory_high.is_some() || t.cpu_max.is_some()
        });
        if config.throttle {
            for s in seen {
                let c = &s.candidate;
                let Some(own) = s.own else { continue };
                if c.qos == Qos::Guaranteed {
                    continue;
                }
                let mut t = state.throttled.get(&c.id).copied().unwrap_or(Throttle {
                    own,
                    memory_high: None,
                    cpu_max: None,
                });
                let before = t;
                if t.memory_high.is_none() && memory == Level::Critical && c.above_request() {
                    t.memory_high = Some(c.usage_bytes.max(c.request_bytes).max(1 << 20));
                }
                let cap = s.cpu_request_millis.max(MIN_CPU_CAP_MILLIS);
                if config.throttle_cpu
                    && t.cpu_max.is_none()
                    && cpu == Level::Critical
                    && s.cpu_cores * 1000.0 > cap as f64
                {
                    t.cpu_max = Some(own.cpu_max_millis.map_or(cap, |m| m.min(cap)));
                }
                if (t.memory_high, t.cpu_max) != (before.memory_high, before.cpu_max) {
                    added += 1;
                    writes.push((c.id.clone(), t.limits(), true));
                    state.throttled.insert(c.id.clone(), t);
                }
            }
        }
        let throttled: Vec<String> = state.throttled.keys().cloned().collect();
        drop(state);
        if let Some(m) = self.engine().monitor() {
            m.update_responder(|r| {
                r.throttles += added;
                r.throttled = throttled;
            });
        }
        if writes.is_empty() {
            return;
        }
        for (id, limits, throttles) in &writes {
            let Some(doc) = self.get(id) else { continue };
            let mib = |b: u64| b as f64 / 1048576.0;
            let reason = if *throttles {
                let mut what = Vec::new();
                if let Some(h) = limits.memory_high {
                    what.push(format!("memory.high {:.0} MiB", mib(h)));
                }
                if let Some(c) = limits.cpu_max_millis {
                    what.push(format!("cpu.max {c}m"));
                }
                format!(
                    "held above its request under critical pressure: {}",
                    what.join(", ")
                )
            } else {
                "pressure eased: its own limits are back".to_owned()
            };
            let kind = if *throttles {
                "agent.throttled"
            } else {
                "agent.unthrottled"
            };
            self.publish(kind, &doc, Some(reason));
        }
        // cgroup writes are small but many: off the async workers
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            for (id, limits, _) in writes {
                match me.cg(&id, |d, g| d.apply(g, &limits)) {
                    Some(Err(error)) => {
                        tracing::warn!(%error, agent = %id, "cannot throttle");
                    }
                    Some(Ok(())) => tracing::info!(
                        agent = %id,
                        memory_high = ?limits.memory_high,
                        cpu_max_millis = ?limits.cpu_max_millis,
                        "throttle"
                    ),
                    None => {}
                }
            }
        });
    }
}
