//! Exits: an agent's end is watched through a pidfd; stops send SIGTERM then SIGKILL; an
//! exit is recorded with its cause, its allocation released (or evicted), its group removed,
//! and a restart planned per policy.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Supervisor {
    pub(crate) fn track(&self, a: &Agent) {
        if let (Some(m), Some(pid)) = (self.engine().monitor(), a.doc.pid) {
            m.track(qm_sys::agent::Target {
                id: a.doc.id.clone(),
                pid,
                start_time: a.doc.start_ticks,
                cgroup: a.doc.cgroup.as_ref().map(PathBuf::from),
            });
        }
    }

    pub(crate) fn untrack(&self, id: &str) {
        if let Some(m) = self.engine().monitor() {
            m.untrack(id);
        }
    }

    /// Watches `pid` end; the supervisor hears of it with `generation`.
    pub(crate) fn watch(&self, id: &str, pid: u32, ticks: Option<u64>, generation: u64) {
        let tx = self.inner.notices.clone();
        let id = id.to_owned();
        match run::pidfd(pid, ticks) {
            Some(fd) => {
                tokio::spawn(async move {
                    run::ended(fd).await;
                    let _ = tx.send(Notice::Exit { id, generation });
                });
            }
            None => {
                let _ = tx.send(Notice::Exit { id, generation });
            }
        }
    }

    /// Stops an agent: SIGTERM to its process group (and cgroup), SIGKILL after its grace
    /// period (or `grace`); it ends `stopped`, its allocation released. A pending agent's
    /// request is cancelled.
    pub async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<AgentDoc, AgentError> {
        self.stop_as(
            id,
            grace,
            AgentState::Stopped,
            "stopped on request".to_owned(),
        )
        .await
    }

    pub(crate) async fn stop_as(
        &self,
        id: &str,
        grace: Option<Duration>,
        state: AgentState,
        reason: String,
    ) -> Result<AgentDoc, AgentError> {
        let pending = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let a = agents
                .get_mut(id)
                .ok_or_else(|| EngineError::NotFound(format!("no agent {id:?}")))?;
            if !a.live() {
                return Ok(a.doc.clone());
            }
            a.stopping = Some((state, reason.clone()));
            match (a.doc.state, a.doc.pid) {
                (AgentState::Running, Some(pid)) => {
                    run::signal_group(pid, Signal::TERM);
                    if let Some(Ok(pids)) = self.cg(id, |d, g| d.procs(g)) {
                        run::signal_each(&pids, Signal::TERM);
                    }
                    let grace = grace.unwrap_or(a.grace);
                    let me = self.clone();
                    let id = id.to_owned();
                    let generation = a.generation;
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        me.kill_if_running(&id, generation);
                    });
                    false
                }
                _ => true,
            }
        };
        if pending {
            self.finish(id, state, Some(reason), None).await?;
        }
        self.get(id)
            .ok_or_else(|| EngineError::NotFound(format!("no agent {id:?}")).into())
    }

    pub(crate) fn kill_if_running(&self, id: &str, generation: u64) {
        let pid = self.inner.agents.lock().ok().and_then(|agents| {
            agents
                .get(id)
                .filter(|a| a.generation == generation && a.doc.state == AgentState::Running)
                .and_then(|a| a.doc.pid)
        });
        if let Some(pid) = pid {
            run::signal_group(pid, Signal::KILL);
            // cgroup.kill waits for the group to empty: never under the agents' lock, and
            // off the async workers
            let me = self.clone();
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                let _ = me.cg(&id, |d, g| d.kill(g));
            });
        }
    }

    /// Ends the agent in `state`: releases its allocation, removes its cgroup, persists and
    /// publishes.
    pub(crate) async fn finish(
        &self,
        id: &str,
        state: AgentState,
        reason: Option<String>,
        event: Option<&str>,
    ) -> Result<(), AgentError> {
        let doc = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let Some(a) = agents.get_mut(id) else {
                return Ok(());
            };
            a.doc.state = state;
            if reason.is_some() {
                a.doc.reason = reason.clone();
            }
            a.doc.ended_at = Some(format_rfc3339(now_ms()));
            a.doc.next_restart_at = None;
            a.restart_at = None;
            a.child = None;
            // a group made for a launch that never came (stopped while pending)
            (a.doc.clone(), a.group.take().is_some())
        };
        let (doc, unused_group) = doc;
        self.untrack(id);
        match (
            state,
            doc.allocation
                .as_deref()
                .and_then(|a| a.parse::<AllocId>().ok()),
        ) {
            // under pressure the allocation ends `evicted` too
            (AgentState::Evicted, Some(alloc))
                if reason.as_deref().is_some_and(|r| r.contains("pressure")) =>
            {
                let _ = self
                    .engine()
                    .evict(alloc, reason.clone().unwrap_or_default())
                    .await;
            }
            _ => self.release(&doc).await,
        }
        if doc.cgroup.is_some() || unused_group {
            self.remove_group(id);
        }
        self.persist(vec![doc.clone()]).await?;
        if let Some(kind) = event {
            self.publish(kind, &doc, reason);
        }
        Ok(())
    }

    pub(crate) async fn release(&self, doc: &AgentDoc) {
        if doc.spec.allocation.is_some() {
            // qm exec holds that allocation itself
            return;
        }
        if let Some(id) = doc
            .allocation
            .as_deref()
            .and_then(|a| a.parse::<AllocId>().ok())
        {
            let _ = self.engine().release(id).await;
        }
    }

    /// A process ended: find out how, then restart, back off or end.
    pub(crate) async fn on_exit(&self, id: &str, generation: u64) -> Result<(), AgentError> {
        let (stopping, kind, doc) = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let Some(a) = agents.get_mut(id) else {
                return Ok(());
            };
            if a.generation != generation || a.doc.state != AgentState::Running {
                return Ok(());
            }
            let (code, signal) = match a.child.as_mut().map(std::process::Child::wait) {
                Some(Ok(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    (status.code(), status.signal())
                }
                _ => (None, None),
            };
            a.child = None;
            let ooms = self.oom_kills(id);
            a.doc.exit_code = code;
            a.doc.signal = signal;
            a.doc.oom_killed = ooms > a.oom_before && signal == Some(9);
            a.doc.pid = None;
            let now = now_ms();
            a.doc.ended_at = Some(format_rfc3339(now));
            let cause = if a.doc.oom_killed {
                "killed by the kernel's OOM killer (memory limit)".to_owned()
            } else if let Some(s) = signal {
                format!("killed by signal {s}")
            } else if let Some(c) = code {
                format!("exited with code {c}")
            } else {
                "ended (exit status unknown: not our child)".to_owned()
            };
            a.doc.reason = Some(cause);
            let kind = if a.stopping.is_some() {
                ExitKind::Stopped
            } else if code == Some(0) {
                ExitKind::Success
            } else {
                ExitKind::Failure
            };
            let decision = a.restarts.on_exit(now, kind, a.started_ms);
            a.doc.restarts = a.restarts.restarts();
            a.doc.crash_loop = a.restarts.crash_looping();
            let stopping = a.stopping.take();
            match decision {
                Decision::Restart { at, .. } if stopping.is_none() && a.doc.spec.pid.is_none() => {
                    a.doc.state = AgentState::Backoff;
                    a.restart_at = Some(at);
                    a.doc.next_restart_at = Some(format_rfc3339(at));
                }
                _ => {}
            }
            (stopping, kind, a.doc.clone())
        };
        self.untrack(id);
        if doc.state == AgentState::Backoff {
            self.persist(vec![doc.clone()]).await?;
            self.publish("agent.exited", &doc, doc.reason.clone());
            return Ok(());
        }
        match stopping {
            Some((state, why)) => {
                let event = if state == AgentState::Evicted {
                    "agent.evicted"
                } else {
                    "agent.exited"
                };
                self.finish(id, state, Some(why), Some(event)).await
            }
            None => {
                let state = if kind == ExitKind::Success {
                    AgentState::Exited
                } else {
                    AgentState::Failed
                };
                self.finish(id, state, doc.reason.clone(), Some("agent.exited"))
                    .await
            }
        }
    }
}
