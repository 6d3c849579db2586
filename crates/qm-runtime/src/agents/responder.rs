//! The pressure responder's last step: when the node's memory is critical, evict one agent at
//! a time, in Kubernetes' order (`qm_pressure::order`: agents above their request first,
//! lowest priority first, a leaker before its peers, guaranteed agents last), and wait
//! before judging again, so no more is evicted than needed. A victim is stopped with SIGTERM
//! and SIGKILL after a short grace, recorded as `evicted` with the reason. Throttling
//! burstable agents first (memory.high) is not built yet.

use std::time::Duration;

use qm_pressure::{Candidate, Level, Qos};

use super::{Supervisor, now_ms};

/// Time between two evictions: the next is chosen on fresh figures.
const COOLDOWN_MS: u64 = 2_000;
/// A victim's grace between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Evicts one agent when memory is critical (at most one per cooldown).
    pub(super) async fn respond(&self) {
        let now = now_ms();
        let last = self
            .inner
            .last_eviction
            .load(std::sync::atomic::Ordering::Relaxed);
        if now < last + COOLDOWN_MS {
            return;
        }
        let Some(latest) = self.engine().monitor().map(crate::monitor::Monitor::latest) else {
            return;
        };
        let Some(memory) = latest
            .pressure
            .as_ref()
            .and_then(|p| p.signals.iter().find(|s| s.name == "memory"))
        else {
            return;
        };
        if memory.level != Level::Critical {
            return;
        }
        let candidates: Vec<Candidate> = match self.inner.agents.lock() {
            Ok(agents) => agents
                .values()
                .filter(|a| a.doc.state == "running" && a.stopping.is_none())
                .map(|a| {
                    let request = a
                        .confinement
                        .as_ref()
                        .and_then(|c| c.0.memory_min.or(c.0.memory_high))
                        .unwrap_or(0);
                    let qos = match a.doc.qos.as_deref() {
                        Some("guaranteed") => Qos::Guaranteed,
                        Some("best-effort") => Qos::BestEffort,
                        _ => Qos::Burstable,
                    };
                    Candidate {
                        id: a.doc.id.clone(),
                        qos,
                        priority: a.doc.spec.priority.unwrap_or(500),
                        usage_bytes: latest
                            .agent_value("qm_agent_memory_bytes", &a.doc.id)
                            .unwrap_or(0.0)
                            .max(0.0) as u64,
                        request_bytes: request,
                        exhaustion_in_s: None,
                    }
                })
                .collect(),
            Err(_) => return,
        };
        let Some(victim) = qm_pressure::order(&candidates).into_iter().next() else {
            return;
        };
        self.inner
            .last_eviction
            .store(now, std::sync::atomic::Ordering::Relaxed);
        let why = format!(
            "evicted under critical memory pressure ({:.0}% used{})",
            memory.utilization * 100.0,
            memory
                .exhaustion_in_s
                .map(|s| format!(", exhaustion forecast in {s:.0} s"))
                .unwrap_or_default()
        );
        tracing::warn!(agent = %victim, reason = %why, "evicting");
        // its exit is recorded as `evicted` and published as `agent.evicted`
        let _ = self.stop_as(&victim, Some(GRACE), "evicted", why).await;
    }
}
