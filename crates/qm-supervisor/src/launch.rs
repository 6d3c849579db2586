//! Launch: a granted agent's run is claimed (`starting`) under the agents' lock, its group
//! made and its process forked off the lock (`start_run`, on a blocking thread), and the
//! result recorded under the lock again; its token and dynamic uid are minted here.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Supervisor {
    /// Spawns (or adopts) the agent `id` now that its allocation is granted, and persists.
    pub(crate) async fn launch(&self, id: &str) -> Result<(), AgentError> {
        let Some(current) = self.get(id) else {
            return Ok(());
        };
        let Some(alloc) = current.allocation.clone() else {
            return Ok(());
        };
        let prepared = self
            .inner
            .agents
            .lock()
            .ok()
            .and_then(|a| a.get(id).and_then(|a| a.confinement.clone()));
        let (limits, adj, qos) = match prepared {
            Some(c) => c,
            None => self.confinement(&alloc).await,
        };
        // 1. claim the run under the lock (nothing slow there): the agent reads `starting`,
        // so a second launch (the grant's event after `create` launched it) finds it taken
        let claimed: Option<RunPlan> = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let Some(a) = agents.get_mut(id) else {
                return Ok(());
            };
            let busy = a.doc.state == AgentState::Starting;
            if busy
                || !matches!(a.doc.state, AgentState::Pending | AgentState::Backoff)
                || a.stopping.is_some()
            {
                if !busy {
                    return Ok(());
                }
                None
            } else {
                a.confinement = Some((limits, adj, qos.clone()));
                a.doc.qos = Some(qos);
                // generations are unique across agents, so a timer of an earlier agent of the same
                // name never matches a new one
                a.generation = self
                    .inner
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                a.doc.state = AgentState::Starting;
                Some(RunPlan {
                    group: a.group.take(),
                    generation: a.generation,
                    restarted: a.started_ms != 0,
                    spec: a.doc.spec.clone(),
                    limits,
                    adj,
                    token: None,
                })
            }
        };
        let Some(mut plan) = claimed else {
            // another launch has it: its caller (say, the create) answers once it is done
            self.until_started(id).await;
            return Ok(());
        };
        // a spawned agent's identity: its own token, minted (durably) for this run by the one
        // launch that claimed it (the previous run's revoked)
        // (not for an agent the cluster's leader placed: tokens live in the leader's ledger,
        // which this member does not write)
        if plan.spec.pid.is_none() && !current.placed {
            plan.token = self.mint_token(&current).await;
        }
        // 2. the slow part (the cgroup, /proc, the fork) off the lock and the async workers
        let (generation, restarted) = (plan.generation, plan.restarted);
        let me = self.clone();
        let owned = id.to_owned();
        let mut run = tokio::task::spawn_blocking(move || me.start_run(&owned, plan))
            .await
            .unwrap_or_else(|e| StartedRun::failed(format!("the start did not finish: {e}")));
        // 3. record it, unless the agent was stopped (or replaced) meanwhile
        let recorded: Option<Option<&'static str>> = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let current = agents.get_mut(id).filter(|a| {
                a.generation == generation
                    && a.doc.state == AgentState::Starting
                    && a.stopping.is_none()
            });
            if let Some(a) = current {
                a.doc.cgroup.clone_from(&run.cgroup);
                a.oom_before = run.oom_before;
                a.child = run.child.take();
                let now = now_ms();
                let event = match run.pid.clone() {
                    Ok(pid) => {
                        a.doc.pid = Some(pid);
                        a.doc.start_ticks = run::start_ticks(pid);
                        a.doc.state = AgentState::Running;
                        a.doc.reason = None;
                        a.doc.exit_code = None;
                        a.doc.signal = None;
                        a.doc.oom_killed = false;
                        a.doc.oom_kills = 0;
                        a.doc.started_at = Some(format_rfc3339(now));
                        a.doc.ended_at = None;
                        a.doc.next_restart_at = None;
                        a.started_ms = now;
                        a.restart_at = None;
                        a.health = a.health_spec.clone().map(HealthState::new);
                        if let Some(h) = &mut a.health {
                            h.started(now);
                        }
                        self.watch(id, pid, a.doc.start_ticks, a.generation);
                        self.track(a);
                        Some(if restarted {
                            "agent.restarted"
                        } else {
                            "agent.started"
                        })
                    }
                    Err(reason) => {
                        a.doc.state = AgentState::Failed;
                        a.doc.reason = Some(reason);
                        a.doc.ended_at = Some(format_rfc3339(now));
                        None
                    }
                };
                Some(event)
            } else {
                None
            }
        };
        let Some(event) = recorded else {
            // stopped while starting: what was just started goes too, and its token
            self.abandon(run).await;
            self.engine().tokens().revoke_managed(id).await;
            return Ok(());
        };
        let doc = self.get(id).ok_or(EngineError::Stopped)?;
        self.persist(vec![doc.clone()]).await?;
        if let Some(kind) = event {
            self.publish(kind, &doc, None);
        }
        Ok(())
    }

    /// Waits (a few seconds at most) while another launch of `id` is in flight.
    pub(crate) async fn until_started(&self, id: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline
            && self
                .get(id)
                .is_some_and(|d| d.state == AgentState::Starting)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Kills what a launch started for an agent stopped meanwhile.
    pub(crate) async fn abandon(&self, mut run: StartedRun) {
        if let Some(mut child) = run.child.take() {
            if let Ok(pid) = run.pid {
                run::signal_group(pid, Signal::KILL);
            }
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Makes the run [`RunPlan`] describes: the cgroup (unless made already), then the
    /// adopted process moved in, or the program spawned inside it. Blocking: the caller runs
    /// it off the async workers, and never under the agents' lock.
    pub(crate) fn start_run(&self, id: &str, plan: RunPlan) -> StartedRun {
        let made = match plan.group {
            Some(g) => Some(Ok(g)),
            None => self.cg(id, |d, g| d.create(g, &plan.limits)),
        };
        let (cgroup, procs) = match made {
            Some(Ok(group)) => (
                Some(group.relative_path().to_string_lossy().into_owned()),
                group.procs_files().to_vec(),
            ),
            Some(Err(error)) => {
                tracing::warn!(%error, agent = id, "no cgroup for the agent");
                (None, Vec::new())
            }
            None => (None, Vec::new()),
        };
        let oom_before = self.oom_kills(id);
        let (child, pid) = match plan.spec.pid {
            Some(pid) if !plan.restarted => {
                // adopt: the process and its descendants join the cgroup where permitted
                if cgroup.is_some() {
                    for p in std::iter::once(pid).chain(run::descendants(pid)) {
                        if let Some(Err(error)) = self.cg(id, |d, g| d.add_process(g, p)) {
                            tracing::warn!(%error, agent = id, pid = p, "cannot move into the cgroup");
                        }
                    }
                }
                (None, Ok(pid))
            }
            Some(_) => (
                None,
                Err("an adopted process cannot be restarted".to_owned()),
            ),
            None => {
                let argv = plan.spec.command.clone().unwrap_or_default();
                let mut env = plan.spec.env.clone().unwrap_or_default();
                env.insert("QM_AGENT".to_owned(), id.to_owned());
                if let Some(url) = &self.inner.config.server_url {
                    env.insert("QM_SERVER".to_owned(), url.clone());
                }
                if let Some(t) = &plan.token {
                    env.insert("QM_TOKEN".to_owned(), t.clone());
                }
                let identity = self.identity_of(&plan.spec);
                let launch = run::Launch {
                    argv: &argv,
                    env: &env,
                    cwd: plan.spec.cwd.as_deref(),
                    cgroup_procs: procs,
                    oom_score_adj: plan.adj,
                    identity: identity.as_ref().ok().copied().flatten(),
                };
                let spawned = match identity {
                    Ok(_) => run::spawn(&launch, &self.logs(id)),
                    Err(why) => Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        why,
                    )),
                };
                match spawned {
                    Ok(child) => {
                        let pid = child.id();
                        (Some(child), Ok(pid))
                    }
                    Err(e) => (None, Err(format!("cannot start {:?}: {e}", argv.first()))),
                }
            }
        };
        StartedRun {
            cgroup,
            oom_before,
            child,
            pid,
        }
    }

    /// A fresh agent token for `doc`'s run (the previous run's revoked), or None when the
    /// store cannot record one (the agent then runs without).
    pub(crate) async fn mint_token(&self, doc: &AgentDoc) -> Option<String> {
        let tokens = self.engine().tokens();
        tokens.revoke_managed(&doc.name).await;
        let req = qm_proto::TokenRequest {
            name: format!("agent:{}", doc.name),
            role: "agent".to_owned(),
            agent: Some(doc.name.clone()),
            pool: doc.spec.pool.clone(),
            spawn: doc.spec.spawn,
            ttl_s: None,
        };
        match tokens.create(&req, true).await {
            Ok(created) => Some(created.token),
            Err(error) => {
                tracing::warn!(%error, agent = %doc.name, "cannot mint the agent's token");
                None
            }
        }
    }

    /// A free dynamic uid (none of a live agent's, none `/etc/passwd` names), held until the
    /// returned guard drops (by then the agent is in the table, or was refused).
    pub(crate) fn allocate_uid(&self) -> Result<identity::HeldUid, AgentError> {
        let mut pending = self
            .inner
            .uids_pending
            .lock()
            .map_err(|_| EngineError::Stopped)?;
        let used: std::collections::BTreeSet<u32> = {
            let agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            agents
                .values()
                .filter(|a| a.live())
                .filter_map(|a| a.doc.spec.user.as_deref()?.parse().ok())
                .collect()
        };
        let uid = identity::free_uid(&used, &pending).ok_or_else(|| {
            EngineError::Conflict(format!(
                "every dynamic uid ({}..={}) is taken by a live agent",
                identity::DYNAMIC_UIDS.start(),
                identity::DYNAMIC_UIDS.end()
            ))
        })?;
        pending.insert(uid);
        Ok(identity::HeldUid {
            uid,
            supervisor: self.clone(),
        })
    }

    pub(crate) fn release_uid(&self, uid: u32) {
        if let Ok(mut p) = self.inner.uids_pending.lock() {
            p.remove(&uid);
        }
    }

    /// The user a spawned agent runs as: its spec's, else the configured default, when the
    /// daemon is root; otherwise the daemon's own (and a spec naming another is an error).
    pub(crate) fn identity_of(
        &self,
        spec: &AgentSpec,
    ) -> Result<Option<qm_cgroup::Identity>, String> {
        let root = rustix::process::geteuid().is_root();
        let asked = spec.user.as_deref();
        // an agent made before dynamic uids, or adopted, falls back to nobody
        let default = match self.inner.config.user.as_str() {
            identity::DYNAMIC => "nobody",
            other => other,
        };
        if !root {
            let me = rustix::process::geteuid().as_raw();
            return match asked.map(resolve_user).transpose()? {
                Some(u) if u.uid != me => Err(format!(
                    "user: the daemon runs as uid {me} and cannot start agents as uid {}",
                    u.uid
                )),
                _ => Ok(None),
            };
        }
        let user = resolve_user(asked.unwrap_or(default))?;
        Ok(Some(qm_cgroup::Identity {
            uid: user.uid,
            gid: user.gid,
        }))
    }
}
