//! The supervisor's loop: timers (restarts due, health probes, fleets, OOM kills), probe
//! results, health transitions and the engine's allocation events.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Supervisor {
    /// Timers: restarts that are due, health probes, log sizes, fleets.
    pub(crate) async fn on_tick(&self) {
        let now = now_ms();
        let mut due = Vec::new();
        let mut probes = Vec::new();
        // log sizes are checked every 5 s, not every tick: two stats per agent add up
        let last = self
            .inner
            .last_rotation
            .load(std::sync::atomic::Ordering::Relaxed);
        let rotate = now >= last + 5_000;
        if rotate {
            self.inner
                .last_rotation
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        if let Ok(mut agents) = self.inner.agents.lock() {
            for a in agents.values_mut() {
                if a.doc.state == AgentState::Backoff && a.restart_at.is_some_and(|t| t <= now) {
                    due.push(a.doc.id.clone());
                }
                if a.doc.state == AgentState::Running {
                    if rotate {
                        self.logs(&a.doc.id).rotate(self.inner.config.log_max_bytes);
                    }
                    if let Some(h) = &mut a.health {
                        if let Some(t) = h.check(now) {
                            probes.push((a.doc.id.clone(), None, Some(t)));
                        } else if !a.probing && h.due(now) {
                            h.probe_started(now);
                            a.probing = true;
                            probes.push((a.doc.id.clone(), Some(h.spec().clone()), None));
                        }
                    }
                }
            }
        }
        for id in due {
            if let Err(error) = self.launch(&id).await {
                tracing::warn!(%error, agent = %id, "restart failed");
            }
        }
        if rotate {
            self.check_oom_kills().await;
        }
        for (id, spec, transition) in probes {
            match (spec, transition) {
                (Some(spec), _) => {
                    let tx = self.inner.notices.clone();
                    tokio::spawn(async move {
                        let result = probe::run(&spec).await;
                        let _ = tx.send(Notice::Probe { id, result });
                    });
                }
                (None, Some(t)) => self.on_health(&id, t).await,
                (None, None) => {}
            }
        }
        self.respond().await;
        self.reconcile_fleets().await;
        self.learn();
    }

    /// Reports OOM kills in running agents' groups (a child killed while the agent runs on),
    /// read off the lock: each new one is counted on the agent and published.
    pub(crate) async fn check_oom_kills(&self) {
        let running: Vec<(String, u64)> = match self.inner.agents.lock() {
            Ok(agents) => agents
                .values()
                .filter(|a| a.doc.state == AgentState::Running && a.doc.cgroup.is_some())
                .map(|a| (a.doc.id.clone(), a.generation))
                .collect(),
            Err(_) => return,
        };
        if running.is_empty() {
            return;
        }
        let me = self.clone();
        let counts = tokio::task::spawn_blocking(move || {
            running
                .into_iter()
                .map(|(id, g)| {
                    let n = me.oom_kills(&id);
                    (id, g, n)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut changed = Vec::new();
        if let Ok(mut agents) = self.inner.agents.lock() {
            for (id, generation, n) in counts {
                let Some(a) = agents.get_mut(&id) else {
                    continue;
                };
                let seen = a.oom_before.saturating_add(a.doc.oom_kills);
                if a.generation == generation && n > seen {
                    a.doc.oom_kills = n.saturating_sub(a.oom_before);
                    changed.push(a.doc.clone());
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        if let Err(error) = self.persist(changed.clone()).await {
            tracing::warn!(%error, "cannot record OOM kills");
            return;
        }
        for doc in &changed {
            tracing::warn!(agent = %doc.id, oom_kills = doc.oom_kills, "a process of the agent was OOM-killed");
            self.publish(
                "agent.oom_killed",
                doc,
                Some(format!(
                    "{} OOM kill(s) in its group during this run",
                    doc.oom_kills
                )),
            );
        }
    }

    pub(crate) async fn on_probe(&self, id: &str, result: ProbeResult) {
        let transition = {
            let Ok(mut agents) = self.inner.agents.lock() else {
                return;
            };
            let Some(a) = agents.get_mut(id) else {
                return;
            };
            a.probing = false;
            if a.doc.state != AgentState::Running {
                return;
            }
            a.health.as_mut().and_then(|h| h.record(now_ms(), result))
        };
        if let Some(t) = transition {
            self.on_health(id, t).await;
        }
    }

    pub(crate) async fn on_health(&self, id: &str, t: logic::health::Transition) {
        use logic::health::Transition;
        let (doc, restart) = {
            let Ok(mut agents) = self.inner.agents.lock() else {
                return;
            };
            let Some(a) = agents.get_mut(id) else {
                return;
            };
            match &t {
                Transition::BecameUnhealthy { reason, .. } => {
                    a.doc.health = "unhealthy".to_owned();
                    a.doc.reason = Some(format!("unhealthy: {reason}"));
                }
                Transition::BecameHealthy => a.doc.health = "healthy".to_owned(),
            }
            let restart = matches!(t, Transition::BecameUnhealthy { .. })
                && a.policy != RestartPolicy::Never
                && a.doc.spec.pid.is_none();
            (a.doc.clone(), restart)
        };
        let _ = self.persist(vec![doc.clone()]).await;
        if matches!(t, logic::health::Transition::BecameUnhealthy { .. }) {
            self.publish("agent.unhealthy", &doc, doc.reason.clone());
        }
        if restart && let Some(pid) = doc.pid {
            // the exit that follows is a failure: restarted per policy with backoff
            run::signal_group(pid, Signal::KILL);
            let me = self.clone();
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                let _ = me.cg(&id, |d, g| d.kill(g));
            });
        }
    }

    /// An allocation event: a pending agent's grant, or a running agent's allocation ended
    /// by someone else (preempted, evicted, expired, lost).
    pub(crate) async fn on_event(&self, e: &EventDoc) {
        let Some(alloc) = &e.allocation else {
            return;
        };
        let found = self.inner.agents.lock().ok().and_then(|agents| {
            agents
                .values()
                .find(|a| a.live() && a.doc.allocation.as_ref() == Some(alloc))
                .map(|a| (a.doc.id.clone(), a.doc.state))
        });
        let Some((id, state)) = found else {
            return;
        };
        match e.kind.as_str() {
            "allocation.granted" if state == AgentState::Pending => {
                if let Err(error) = self.launch(&id).await {
                    tracing::warn!(%error, agent = %id, "launch failed");
                }
            }
            "allocation.preempted"
            | "allocation.evicted"
            | "allocation.expired"
            | "allocation.lost" => {
                let why = format!(
                    "its allocation was {}{}",
                    e.kind.trim_start_matches("allocation."),
                    e.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                let _ = self.stop_as(&id, None, AgentState::Evicted, why).await;
            }
            _ => {}
        }
    }

    pub(crate) async fn run(self, mut notices: mpsc::UnboundedReceiver<Notice>) {
        let mut events = self.engine().subscribe(None).live;
        let mut tick = tokio::time::interval(self.inner.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pressure = self.engine().monitor().map_or_else(
            || Arc::new(tokio::sync::Notify::new()),
            |m| m.pressure_wake(),
        );
        loop {
            tokio::select! {
                // pressure first: an eviction must not wait behind a burst of notices
                biased;
                () = pressure.notified() => self.respond().await,
                n = notices.recv() => match n {
                    Some(Notice::Exit { id, generation }) => {
                        if let Err(error) = self.on_exit(&id, generation).await {
                            tracing::warn!(%error, agent = %id, "recording an exit failed");
                        }
                    }
                    Some(Notice::Probe { id, result }) => self.on_probe(&id, result).await,
                    None => return,
                },
                e = events.recv() => match e {
                    Ok(e) => self.on_event(&e).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }
}
