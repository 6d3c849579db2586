//! Admission: a create is checked (fields, adoption rights, the user), its name claimed, its
//! group made while the ledger decides, and its allocation asked for; the confinement (limits,
//! `oom_score_adj`, QoS class) comes from the request or, under `qm exec`, the allocation.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Supervisor {
    /// Validates `spec` (every field named), admits it through the ledger and spawns or
    /// adopts it; answers the agent once durable. `fleet` marks a fleet's member.
    pub async fn create(
        &self,
        spec: AgentSpec,
        fleet: Option<String>,
        by: Requester,
    ) -> Result<AgentDoc, AgentError> {
        self.create_as(spec, fleet, by, None).await
    }

    /// Runs an agent the cluster's leader placed on this member's node under `allocation`,
    /// which the leader granted there (and releases: this member never writes the ledger).
    /// Its request confines it; the leader checked who asked.
    pub async fn run_placed(
        &self,
        mut spec: AgentSpec,
        allocation: String,
    ) -> Result<AgentDoc, AgentError> {
        if spec.pid.is_some() || spec.allocation.is_some() {
            return Err(EngineError::Invalid(vec![FieldProblem::new(
                "pid",
                "a placed agent is spawned by its member, never adopted",
            )])
            .into());
        }
        spec.allocation = None;
        // a fleet's member says which fleet by its label
        let fleet = spec
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::FLEET_LABEL))
            .cloned();
        self.create_as(spec, fleet, Requester::daemon(), Some(allocation))
            .await
    }

    async fn create_as(
        &self,
        spec: AgentSpec,
        fleet: Option<String>,
        by: Requester,
        placed: Option<String>,
    ) -> Result<AgentDoc, AgentError> {
        let mut problems = spec.problems("");
        if let Some(pid) = spec.pid {
            match may_adopt(pid, by) {
                Ok(()) if run::start_ticks(pid).is_none() => problems.push(FieldProblem::new(
                    "pid",
                    format!("no running process {pid}"),
                )),
                Ok(()) => {}
                Err((true, why)) => return Err(AgentError::Forbidden(format!("pid: {why}"))),
                Err((false, why)) => problems.push(FieldProblem::new("pid", why)),
            }
        }
        if let Some(u) = &spec.user {
            match resolve_user(u) {
                Ok(user) if user.uid == 0 && !by.admin => {
                    return Err(AgentError::Forbidden(format!(
                        "user: only an admin may run an agent as uid 0 ({u:?})"
                    )));
                }
                Ok(_) => {}
                Err(why) => problems.push(FieldProblem::new("user", why)),
            }
        }
        if let Some(cwd) = &spec.cwd
            && !std::path::Path::new(cwd).is_dir()
        {
            problems.push(FieldProblem::new(
                "cwd",
                format!("{cwd:?} is not a directory"),
            ));
        }
        let health = match &spec.health {
            Some(h) => match probe::spec_of(h) {
                Ok(s) => Some(s),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            },
            None => None,
        };
        let request = spec
            .allocation_request()
            .into_request(self.engine().catalog());
        let request = match request {
            // a placed agent's request was the leader's to place
            Ok(r) if placed.is_some() => Some(r),
            // a process started (or adopted) here is charged to this host, never another node
            Ok(mut r) => {
                let here = self.engine().node_name();
                match r.node_selector.get(qm_core::NODE_LABEL) {
                    Some(asked) if asked != here => problems.push(FieldProblem::new(
                        "node_selector",
                        format!(
                            "{}={asked:?}: this daemon runs its agents on its own node, {here:?}",
                            qm_core::NODE_LABEL
                        ),
                    )),
                    _ => {}
                }
                r.node_selector
                    .insert(qm_core::NODE_LABEL.to_owned(), here.to_owned());
                Some(r)
            }
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        if !problems.is_empty() {
            return Err(EngineError::Invalid(problems).into());
        }
        // an agent of its own uid, so no other agent can read its token or signal it
        let mut spec = spec;
        let _uid = if spec.pid.is_none()
            && spec.user.is_none()
            && self.inner.config.user == identity::DYNAMIC
            && rustix::process::geteuid().is_root()
        {
            let held = self.allocate_uid()?;
            spec.user = Some(held.uid.to_string());
            Some(held)
        } else {
            None
        };
        // one name, one agent: the name is claimed here, before anything is made for it, and
        // a concurrent create of the same name is refused until this one is done
        {
            let agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            if agents.get(&spec.name).is_some_and(Agent::live) {
                return Err(EngineError::Conflict(format!(
                    "agent {:?} exists and is live; stop it first",
                    spec.name
                ))
                .into());
            }
            let mut creating = self
                .inner
                .creating
                .lock()
                .map_err(|_| EngineError::Stopped)?;
            if !creating.insert(spec.name.clone()) {
                return Err(EngineError::Conflict(format!(
                    "agent {:?} is being created by another request",
                    spec.name
                ))
                .into());
            }
        }
        let _claim = NameClaim {
            supervisor: self.clone(),
            name: spec.name.clone(),
        };
        // under an existing allocation (qm exec) the allocation's own resources confine it,
        // read at launch
        let confinement = request
            .as_ref()
            .filter(|_| spec.allocation.is_none())
            .map(|r| self.confinement_of(r));
        // never share a group with a stranger: processes of an earlier agent of this name (it
        // outlived a daemon that lost track of it) would live under this agent's limits
        let strangers = self
            .cg(&spec.name, |d, g| d.procs(g).unwrap_or_default())
            .unwrap_or_default();
        if !strangers.is_empty() {
            let group = self
                .cg(&spec.name, |d, g| d.relative_path(g))
                .unwrap_or_default();
            return Err(EngineError::Conflict(format!(
                "cgroup {} still holds processes {strangers:?} of an earlier agent named {:?}; \
                 stop them, or choose another name",
                group.display(),
                spec.name
            ))
            .into());
        }
        // the cgroup is made while the ledger decides (a spawn's admission is mostly its
        // fsync); removed again if the request is refused
        let precreate = match (&confinement, spec.pid, &spec.allocation) {
            (Some((limits, _, _)), None, None) if self.inner.driver.is_some() => {
                let me = self.clone();
                let (name, limits) = (spec.name.clone(), *limits);
                Some(tokio::task::spawn_blocking(move || {
                    me.cg(&name, |d, g| d.create(g, &limits).ok()).flatten()
                }))
            }
            _ => None,
        };
        let admission = match &placed {
            Some(alloc) => Ok((alloc.clone(), true)),
            None => self.admit(&spec, request).await,
        };
        let group = match precreate {
            Some(h) => h.await.ok().flatten(),
            None => None,
        };
        let (alloc_id, granted) = match admission {
            Ok(a) => a,
            Err(e) => {
                if group.is_some() {
                    self.remove_group(&spec.name);
                }
                return Err(e);
            }
        };
        let policy = match spec.restart.as_deref() {
            Some(r) => r.parse().unwrap_or(RestartPolicy::OnFailure),
            None if spec.pid.is_some() => RestartPolicy::Never,
            None => RestartPolicy::OnFailure,
        };
        let grace = Duration::from_secs_f64(spec.grace_s.unwrap_or(10.0));
        // a placed agent's allocation is the leader's to release, never this member's
        if placed.is_some() {
            spec.allocation = Some(alloc_id.clone());
        }
        let doc = AgentDoc {
            id: spec.name.clone(),
            name: spec.name.clone(),
            node: Some(self.engine().node_name().to_owned()),
            placed: placed.is_some(),
            state: AgentState::Pending,
            adopted: spec.pid.is_some(),
            allocation: Some(alloc_id.clone()),
            health: "unknown".to_owned(),
            reason: (!granted).then(|| "waiting for admission".to_owned()),
            fleet,
            spec,
            ..AgentDoc::default()
        };
        let agent = Agent {
            doc,
            child: None,
            generation: 0,
            restarts: Restarts::new(self.inner.config.backoff.clone(), policy),
            policy,
            health_spec: health,
            health: None,
            probing: false,
            started_ms: 0,
            oom_before: 0,
            stopping: None,
            restart_at: None,
            grace,
            confinement,
            group,
            resized_ms: None,
        };
        let id = agent.doc.id.clone();
        if let Ok(mut agents) = self.inner.agents.lock() {
            agents.insert(id.clone(), agent);
        }
        if granted {
            self.launch(&id).await?;
        } else {
            let doc = self.get(&id).ok_or(EngineError::Stopped)?;
            self.persist(vec![doc]).await?;
        }
        let doc = self.get(&id).ok_or(EngineError::Stopped)?;
        if doc.state == AgentState::Failed {
            // nothing runs: give the capacity and the cgroup back
            self.release(&doc).await;
            if doc.cgroup.is_some() {
                self.remove_group(&id);
            }
            return Err(AgentError::Spawn(doc.reason.unwrap_or_default()));
        }
        Ok(doc)
    }

    /// Admission: an existing granted allocation (`qm exec`), or a new request; answers the
    /// allocation's id and whether it is granted now.
    pub(crate) async fn admit(
        &self,
        spec: &AgentSpec,
        request: Option<qm_core::Request>,
    ) -> Result<(String, bool), AgentError> {
        match &spec.allocation {
            Some(id) => {
                let parsed: AllocId = id.parse().map_err(|_| {
                    EngineError::Invalid(vec![FieldProblem::new(
                        "allocation",
                        format!("{id:?} is not an allocation id"),
                    )])
                })?;
                match self.engine().get(parsed).await? {
                    Lookup::Live(doc)
                        if doc.state == "granted"
                            && doc.node.as_deref() != Some(self.engine().node_name()) =>
                    {
                        Err(EngineError::Conflict(format!(
                            "allocation {id} is on node {:?}, not on this host ({:?}): a process \
                             here cannot be charged to it",
                            doc.node.as_deref().unwrap_or("none"),
                            self.engine().node_name()
                        ))
                        .into())
                    }
                    Lookup::Live(doc) if doc.state == "granted" => Ok((id.clone(), true)),
                    _ => {
                        Err(EngineError::Conflict(format!("allocation {id} is not granted")).into())
                    }
                }
            }
            None => {
                let Some(request) = request else {
                    return Err(EngineError::Invalid(Vec::new()).into());
                };
                let replay = self.engine().submit(request, false, None).await?;
                let Some(id) = replay.id else {
                    return Err(AgentError::Spawn("the ledger gave no allocation id".into()));
                };
                Ok((id, replay.status == 201))
            }
        }
    }

    /// The cgroup limits, OOM score and QoS of a request.
    pub(crate) fn confinement_of(&self, req: &qm_core::Request) -> Confinement {
        let qos = qm_core::Qos::derive(&req.resources, req.limits.as_ref());
        let cg_qos = match qos {
            qm_core::Qos::Guaranteed => qm_cgroup::Qos::Guaranteed,
            qm_core::Qos::Burstable => qm_cgroup::Qos::Burstable,
            qm_core::Qos::BestEffort => qm_cgroup::Qos::BestEffort,
        };
        let nonzero = |v: u64| (v > 0).then_some(v);
        let limits = qm_cgroup::limits_for(
            cg_qos,
            qm_cgroup::Requests {
                cpu_millis: req.resources.cpu(),
                memory_bytes: req.resources.memory(),
            },
            qm_cgroup::Maximums {
                cpu_millis: req.limits.as_ref().and_then(|l| nonzero(l.cpu())),
                memory_bytes: req.limits.as_ref().and_then(|l| nonzero(l.memory())),
            },
        );
        let adj =
            qm_cgroup::oom_score_adj_for(cg_qos, req.resources.memory(), self.inner.node_memory);
        (limits, Some(adj), qos.name().to_owned())
    }

    /// The cgroup limits and OOM score of the agent's allocation.
    pub(crate) async fn confinement(
        &self,
        alloc: &str,
    ) -> (qm_cgroup::Limits, Option<i32>, String) {
        let doc = match alloc.parse::<AllocId>() {
            Ok(id) => match self.engine().get(id).await {
                Ok(Lookup::Live(doc)) => Some(*doc),
                _ => None,
            },
            Err(_) => None,
        };
        let Some(doc) = doc else {
            return (qm_cgroup::Limits::default(), None, "best-effort".into());
        };
        let q = |m: &BTreeMap<String, String>, r: &str, unit| {
            m.get(r)
                .and_then(|v| qm_core::quantity::parse(unit, v).ok())
        };
        use qm_core::quantity::Unit;
        let req_cpu = q(&doc.resources, "cpu", Unit::Millicores).unwrap_or(0);
        let req_mem = q(&doc.resources, "memory", Unit::Bytes).unwrap_or(0);
        let lim = doc.limits.clone().unwrap_or_default();
        let qos: qm_cgroup::Qos = doc.qos.parse().unwrap_or(qm_cgroup::Qos::Burstable);
        let limits = qm_cgroup::limits_for(
            qos,
            qm_cgroup::Requests {
                cpu_millis: req_cpu,
                memory_bytes: req_mem,
            },
            qm_cgroup::Maximums {
                cpu_millis: q(&lim, "cpu", Unit::Millicores),
                memory_bytes: q(&lim, "memory", Unit::Bytes),
            },
        );
        let adj = match doc.qos.as_str() {
            "guaranteed" => -997,
            "best-effort" => 1000,
            _ => qm_cgroup::oom_score_adj_burstable(req_mem, self.inner.node_memory),
        };
        (limits, Some(adj), doc.qos)
    }
}
