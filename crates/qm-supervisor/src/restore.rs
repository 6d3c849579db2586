//! Restore: at start, every stored live agent is re-adopted by pid and start time, or recorded
//! as ended; pending ones are launched once admitted.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Supervisor {
    /// At start: every stored agent back in memory; live ones re-adopted by pid and start
    /// time, or recorded as ended (and restarted per policy); pending ones launched if their
    /// allocation was granted meanwhile.
    pub(crate) async fn restore(&self) -> Result<(), AgentError> {
        let store = self.engine().store().clone();
        let loaded = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| EngineError::Internal(format!("a store read did not finish: {e}")))?
            .map_err(EngineError::from)?;
        let mut to_launch = Vec::new();
        let mut ended = Vec::new();
        for (id, _, body) in &loaded.agents {
            let Ok(doc) = from_json::<AgentDoc>(body) else {
                tracing::warn!(agent = %id, "unreadable stored agent skipped");
                continue;
            };
            let policy = match doc.spec.restart.as_deref() {
                Some(r) => r.parse().unwrap_or(RestartPolicy::OnFailure),
                None if doc.spec.pid.is_some() => RestartPolicy::Never,
                None => RestartPolicy::OnFailure,
            };
            let health_spec = doc
                .spec
                .health
                .as_ref()
                .and_then(|h| probe::spec_of(h).ok());
            let mut a = Agent {
                grace: Duration::from_secs_f64(doc.spec.grace_s.unwrap_or(10.0)),
                child: None,
                generation: self
                    .inner
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                // the count goes on where the last daemon left it
                restarts: Restarts::resume(
                    self.inner.config.backoff.clone(),
                    policy,
                    doc.restarts,
                    doc.crash_loop,
                ),
                policy,
                health_spec,
                health: None,
                probing: false,
                started_ms: doc
                    .started_at
                    .as_deref()
                    .and_then(qm_proto::parse_rfc3339)
                    .unwrap_or(0),
                oom_before: self.oom_kills(id),
                stopping: None,
                restart_at: None,
                // a placed agent's allocation is in the leader's ledger, not this member's: its
                // request says how it is confined
                confinement: if doc.placed {
                    let mut spec = doc.spec.clone();
                    spec.allocation = None;
                    spec.allocation_request()
                        .into_request(self.engine().catalog())
                        .ok()
                        .map(|r| self.confinement_of(&r))
                } else {
                    None
                },
                group: None,
                resized_ms: None,
                doc,
            };
            match a.doc.state {
                AgentState::Running | AgentState::Starting => match a.doc.pid {
                    Some(pid) if run::pidfd(pid, a.doc.start_ticks).is_some() => {
                        self.watch(id, pid, a.doc.start_ticks, a.generation);
                        self.track(&a);
                        a.health = a.health_spec.clone().map(HealthState::new);
                        if let Some(h) = &mut a.health {
                            h.started(now_ms());
                        }
                    }
                    _ => ended.push(id.clone()),
                },
                AgentState::Backoff => {
                    a.restart_at = Some(now_ms());
                }
                AgentState::Pending => to_launch.push(id.clone()),
                _ => {}
            }
            if let Ok(mut agents) = self.inner.agents.lock() {
                agents.insert(id.clone(), a);
            }
        }
        for id in ended {
            // ended while the daemon was down: recorded, then handled like any exit
            if let Ok(mut agents) = self.inner.agents.lock()
                && let Some(a) = agents.get_mut(&id)
            {
                a.doc.reason = Some("ended while the daemon was down".to_owned());
            }
            let generation = self
                .inner
                .agents
                .lock()
                .ok()
                .and_then(|a| a.get(&id).map(|a| a.generation))
                .unwrap_or(0);
            let _ = self.inner.notices.send(Notice::Exit {
                id: id.clone(),
                generation,
            });
        }
        for id in to_launch {
            let granted = match self
                .get(&id)
                .and_then(|d| d.allocation)
                .and_then(|a| a.parse::<AllocId>().ok())
            {
                Some(a) => {
                    matches!(self.engine().get(a).await, Ok(Lookup::Live(d)) if d.state == "granted")
                }
                None => false,
            };
            // a launch that cannot be recorded (a full disk) does not keep the daemon down
            if granted && let Err(error) = self.launch(&id).await {
                tracing::warn!(%error, agent = %id, "cannot launch a pending agent at start");
            }
        }
        self.restore_fleets(&loaded.fleets);
        Ok(())
    }
}
