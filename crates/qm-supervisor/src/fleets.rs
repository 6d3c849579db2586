//! Fleets: N agents from one template. The reconciler (run on the supervisor's tick) creates
//! members `<fleet>-<n>` while fewer are live than wanted (so a member that dies for good is
//! replaced), stops the newest when more are, rolls members of an older template one at a
//! time, and lets the autoscaler (the HPA algorithm, `logic::autoscale`, optionally ahead of
//! a forecast of the load, `logic::predictive`) set the wanted number from the members' cpu
//! or memory utilisation of their requests, or from a metric pushed to
//! `POST /v1/fleets/{name}/metric`. Members are admitted through the ledger like any agent. In a cluster the controller stays with the member that holds the fleet and its
//! members are placed by the leader like any spawn ([`FleetMembers`]), labelled with their
//! fleet.

use std::collections::BTreeMap;
use std::sync::Arc;

use qm_proto::{AgentDoc, AgentSpec, AgentState, FieldProblem, FleetDoc, FleetSpec, from_json};
use qm_store::{Batch, Op};

use super::logic::autoscale::{AutoscaleSpec, Autoscaler, Metric};
use super::logic::predictive::{DEFAULT_ALPHA, DEFAULT_BETA, Predictive};
use super::{AgentError, Supervisor, now_ms};
use qm_engine::EngineError;

/// The label that carries a member's template generation.
const GENERATION: &str = "qm.fleet.generation";

/// The label naming a placed agent's fleet (its members carry it, so spread and affinity
/// rules can name a fleet: `match_labels: {"qm.dev/fleet": "coders"}`).
pub const FLEET_LABEL: &str = "qm.dev/fleet";

/// A future answered by [`FleetMembers`].
pub type Answer<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where a fleet's members run when they are not this daemon's own: in a cluster, wherever
/// the leader places them. The fleet's controller stays here; its members are spawned, listed
/// and stopped through this.
pub trait FleetMembers: Send + Sync + std::fmt::Debug {
    /// The fleet's live members (placed or waiting), oldest first or in any order.
    fn list(&self, fleet: &str) -> Answer<'_, Vec<AgentDoc>>;
    /// Spawns one member (its spec carries [`FLEET_LABEL`]).
    fn spawn(&self, spec: AgentSpec) -> Answer<'_, Result<AgentDoc, AgentError>>;
    /// Asks for a member to stop (does not wait).
    fn stop(&self, name: String) -> Answer<'_, ()>;
}
/// A pushed metric older than this is not used.
const CUSTOM_FRESH_MS: u64 = 300_000;

/// Why a fleet command was refused.
pub type FleetError = AgentError;

#[derive(Debug)]
pub(super) struct Fleet {
    doc: FleetDoc,
    /// Its placed members as last listed (with [`FleetMembers`]): (name, running and healthy).
    placed: Vec<(String, bool)>,
    autoscaler: Option<Autoscaler>,
    custom: Option<(f64, u64)>,
    next_index: u64,
    last_eval: u64,
}

/// What a fleet wants now, read under its lock.
struct Wanted {
    replicas: usize,
    generation: u64,
    template: AgentSpec,
    /// The next member index to try.
    next: u64,
}

/// A member's index: the number after the last `-` of its name (0 if none).
fn member_index(name: &str) -> u64 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The template generation a member's spec was made from (0 if unlabelled).
fn generation_of(spec: &AgentSpec) -> u64 {
    spec.labels
        .as_ref()
        .and_then(|l| l.get(GENERATION))
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Labels a new member with its template's generation and its fleet (so topology rules and
/// the `learned` strategy can name the fleet, here as in a cluster).
fn label_member(spec: &mut AgentSpec, fleet: &str, generation: u64) {
    let labels = spec.labels.get_or_insert_with(Default::default);
    labels.insert(GENERATION.to_owned(), generation.to_string());
    labels.insert(FLEET_LABEL.to_owned(), fleet.to_owned());
}

fn autoscale_spec(w: &qm_proto::AutoscaleWire) -> Result<AutoscaleSpec, Vec<FieldProblem>> {
    let metric = match w.metric.as_str() {
        "cpu" => Metric::Cpu,
        "memory" => Metric::Memory,
        "custom" => Metric::Custom,
        other => {
            return Err(vec![FieldProblem::new(
                "autoscale.metric",
                format!("{other:?} is not cpu, memory or custom"),
            )]);
        }
    };
    let mut spec = AutoscaleSpec::new(w.min, w.max, metric, w.target);
    if let Some(t) = w.tolerance {
        spec.tolerance = t;
    }
    if let Some(s) = w.scale_up_stabilization_s {
        spec.scale_up_stabilization_ms = (s.max(0.0) * 1000.0) as u64;
    }
    if let Some(s) = w.scale_down_stabilization_s {
        spec.scale_down_stabilization_ms = (s.max(0.0) * 1000.0) as u64;
    }
    spec.band = w.band.map(|[lo, hi]| (lo, hi));
    spec.predictive = w.predictive.as_ref().map(|p| Predictive {
        horizon_s: p.horizon_s,
        alpha: p.alpha.unwrap_or(DEFAULT_ALPHA),
        beta: p.beta.unwrap_or(DEFAULT_BETA),
    });
    let problems: Vec<FieldProblem> = spec
        .validate()
        .into_iter()
        .map(|(f, m)| {
            let f = f.replace("stabilization_ms", "stabilization_s");
            FieldProblem::new(&format!("autoscale.{f}"), m)
        })
        .collect();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems)
    }
}

impl Supervisor {
    async fn persist_fleet(&self, doc: &FleetDoc) -> Result<(), AgentError> {
        let mut batch = Batch::default();
        batch.push(Op::PutFleet {
            name: doc.name.clone(),
            body: qm_proto::to_json(doc),
        });
        self.commit(batch).await
    }

    pub(super) async fn commit(&self, mut batch: Batch) -> Result<(), AgentError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        qm_engine::audit::attach(&mut batch);
        let marked = qm_engine::audit::on_commit();
        self.engine().store().commit(
            batch,
            Box::new(move |r| {
                marked(r.is_ok());
                let _ = tx.send(r);
            }),
        );
        rx.await
            .map_err(|_| EngineError::Stopped)?
            .map_err(EngineError::from)?;
        Ok(())
    }

    /// Places fleets' members through `members` from now on (a cluster member's).
    pub fn place_fleets_with(&self, members: Arc<dyn FleetMembers>) {
        let _ = self.inner.placed_fleets.set(members);
    }

    fn fleet_doc(&self, f: &Fleet) -> FleetDoc {
        let mut doc = f.doc.clone();
        if self.inner.placed_fleets.get().is_some() {
            doc.members = f.placed.iter().map(|(n, _)| n.clone()).collect();
            doc.ready = f.placed.iter().filter(|(_, ok)| *ok).count() as u32;
            return doc;
        }
        let agents = self.inner.agents.lock().ok();
        doc.members = agents
            .as_ref()
            .map(|a| {
                a.values()
                    .filter(|a| a.live() && a.doc.fleet.as_deref() == Some(&doc.name))
                    .map(|a| a.doc.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        doc.ready = agents.as_ref().map_or(0, |a| {
            a.values()
                .filter(|a| {
                    a.doc.fleet.as_deref() == Some(&doc.name)
                        && a.doc.state == AgentState::Running
                        && a.doc.health != "unhealthy"
                })
                .count() as u32
        });
        doc
    }

    /// Every fleet.
    pub fn fleets(&self) -> Vec<FleetDoc> {
        let docs: Vec<FleetDoc> = match self.inner.fleets.lock() {
            Ok(f) => f.values().map(|f| f.doc.clone()).collect(),
            Err(_) => Vec::new(),
        };
        docs.into_iter()
            .filter_map(|d| self.fleet(&d.name))
            .collect()
    }

    /// One fleet.
    pub fn fleet(&self, name: &str) -> Option<FleetDoc> {
        let fleets = self.inner.fleets.lock().ok()?;
        let f = fleets.get(name)?;
        Some(self.fleet_doc(f))
    }

    /// Creates (`create`) or replaces a fleet. A changed template rolls the members.
    pub async fn put_fleet(&self, spec: FleetSpec, create: bool) -> Result<FleetDoc, AgentError> {
        let mut problems = spec.problems();
        let autoscaler = match &spec.autoscale {
            Some(w) => match autoscale_spec(w) {
                Ok(s) => Some(Autoscaler::new(s)),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            },
            None => None,
        };
        let mut probe = spec.template.clone();
        probe.name = format!("{}-0", spec.name);
        if let Err(p) = probe
            .allocation_request()
            .into_request(self.engine().catalog())
        {
            problems.extend(p.into_iter().map(|mut p| {
                p.field = format!("template.{}", p.field);
                p
            }));
        }
        if !problems.is_empty() {
            return Err(EngineError::Invalid(problems).into());
        }
        let doc = {
            let mut fleets = self.inner.fleets.lock().map_err(|_| EngineError::Stopped)?;
            match (fleets.get_mut(&spec.name), create) {
                (Some(_), true) => {
                    return Err(
                        EngineError::Conflict(format!("fleet {:?} exists", spec.name)).into(),
                    );
                }
                (None, false) => {
                    return Err(EngineError::NotFound(format!("no fleet {:?}", spec.name)).into());
                }
                (Some(f), false) => {
                    if f.doc.template != spec.template {
                        f.doc.generation += 1;
                        f.doc.template = spec.template.clone();
                    }
                    if f.doc.autoscale != spec.autoscale {
                        f.autoscaler = autoscaler;
                        f.doc.autoscale = spec.autoscale.clone();
                    }
                    f.doc.replicas = spec.replicas;
                    f.doc.vertical = spec.vertical.clone();
                    f.doc.clone()
                }
                (None, true) => {
                    let doc = FleetDoc {
                        name: spec.name.clone(),
                        replicas: spec.replicas,
                        members: Vec::new(),
                        ready: 0,
                        template: spec.template.clone(),
                        autoscale: spec.autoscale.clone(),
                        metric: None,
                        last_scale: None,
                        generation: 1,
                        vertical: spec.vertical.clone(),
                    };
                    fleets.insert(
                        spec.name.clone(),
                        Fleet {
                            doc: doc.clone(),
                            placed: Vec::new(),
                            autoscaler,
                            custom: None,
                            next_index: 0,
                            last_eval: 0,
                        },
                    );
                    doc
                }
            }
        };
        self.persist_fleet(&doc).await?;
        self.reconcile_fleets().await;
        self.fleet(&doc.name)
            .ok_or_else(|| EngineError::NotFound(format!("no fleet {:?}", doc.name)).into())
    }

    /// Deletes a fleet and stops its members.
    pub async fn delete_fleet(&self, name: &str) -> Result<FleetDoc, AgentError> {
        let doc = {
            let fleets = self.inner.fleets.lock().map_err(|_| EngineError::Stopped)?;
            let f = fleets
                .get(name)
                .ok_or_else(|| EngineError::NotFound(format!("no fleet {name:?}")))?;
            self.fleet_doc(f)
        };
        let mut batch = Batch::default();
        batch.push(Op::DeleteFleet {
            name: name.to_owned(),
        });
        self.commit(batch).await?;
        if let Ok(mut fleets) = self.inner.fleets.lock() {
            fleets.remove(name);
        }
        match self.inner.placed_fleets.get() {
            Some(placed) => {
                for m in &doc.members {
                    placed.stop(m.clone()).await;
                }
            }
            None => {
                for m in &doc.members {
                    let _ = self.stop(m, None).await;
                }
            }
        }
        Ok(doc)
    }

    /// Records a custom metric value for the fleet's autoscaler.
    pub fn push_metric(&self, name: &str, value: f64) -> Result<FleetDoc, AgentError> {
        if !value.is_finite() || value < 0.0 {
            return Err(EngineError::Invalid(vec![FieldProblem::new(
                "value",
                format!("{value} is not a finite, non-negative number"),
            )])
            .into());
        }
        let mut fleets = self.inner.fleets.lock().map_err(|_| EngineError::Stopped)?;
        let f = fleets
            .get_mut(name)
            .ok_or_else(|| EngineError::NotFound(format!("no fleet {name:?}")))?;
        f.custom = Some((value, now_ms()));
        f.last_eval = 0;
        Ok(f.doc.clone())
    }

    /// The fleet's metric now and how many members it was measured on (0: all of them):
    /// members' average utilisation of their requests, or the pushed value while fresh.
    fn fleet_metric(&self, f: &Fleet, now: u64) -> Option<(f64, u32)> {
        let metric = f.autoscaler.as_ref()?.spec().metric;
        if metric == Metric::Custom {
            return f
                .custom
                .filter(|(_, at)| now.saturating_sub(*at) <= CUSTOM_FRESH_MS)
                .map(|(v, _)| (v, 0));
        }
        // the template's request, parsed as any agent's is (no JSON here)
        let mut probe = f.doc.template.clone();
        probe.name = format!("{}-0", f.doc.name);
        let template = probe
            .allocation_request()
            .into_request(self.engine().catalog())
            .ok()?;
        let (series, request) = match metric {
            Metric::Cpu => (
                "qm_agent_cpu_usage_cores",
                template.resources.cpu() as f64 / 1000.0,
            ),
            _ => ("qm_agent_memory_bytes", template.resources.memory() as f64),
        };
        if request <= 0.0 {
            return None;
        }
        let latest = self.engine().monitor()?.latest();
        let members: Vec<String> = self
            .inner
            .agents
            .lock()
            .ok()?
            .values()
            .filter(|a| {
                a.doc.fleet.as_deref() == Some(&f.doc.name) && a.doc.state == AgentState::Running
            })
            .map(|a| a.doc.id.clone())
            .collect();
        let values: Vec<f64> = members
            .iter()
            .filter_map(|m| latest.agent_value(series, m).map(|v| v / request))
            .collect();
        // placed members run elsewhere and are not all seen here: read the average as all's
        let measured = if self.inner.placed_fleets.get().is_some() {
            0
        } else {
            u32::try_from(values.len()).unwrap_or(u32::MAX)
        };
        (!values.is_empty()).then(|| (values.iter().sum::<f64>() / values.len() as f64, measured))
    }

    /// Brings every fleet toward its wanted members.
    pub(super) async fn reconcile_fleets(&self) {
        let now = now_ms();
        let names: Vec<String> = match self.inner.fleets.lock() {
            Ok(f) => f.keys().cloned().collect(),
            Err(_) => return,
        };
        for name in names {
            // autoscale, at most once a second
            let scaled = {
                let metric = {
                    let fleets = self.inner.fleets.lock();
                    fleets.ok().and_then(|f| {
                        f.get(&name)
                            .filter(|f| f.autoscaler.is_some() && now >= f.last_eval + 1000)
                            .map(|f| self.fleet_metric(f, now).unzip())
                    })
                };
                let mut scaled = None;
                if let Some((metric, measured)) = metric
                    && let Ok(mut fleets) = self.inner.fleets.lock()
                    && let Some(f) = fleets.get_mut(&name)
                {
                    f.last_eval = now;
                    f.doc.metric = metric;
                    let current = f.doc.replicas;
                    if let Some(a) = &mut f.autoscaler {
                        let d = a.recommend_measured(now, current, measured.unwrap_or(0), metric);
                        if d.changed {
                            f.doc.replicas = d.replicas;
                            f.doc.last_scale = Some(d.reason.clone());
                            scaled = Some((f.doc.clone(), d.reason));
                        }
                    }
                }
                scaled
            };
            if let Some((doc, reason)) = scaled
                && self.persist_fleet(&doc).await.is_ok()
            {
                self.engine().publish(vec![qm_proto::EventDoc {
                    kind: "fleet.scaled".to_owned(),
                    at: qm_proto::format_rfc3339(now),
                    reason: Some(format!("{}: {reason}", doc.name)),
                    ..qm_proto::EventDoc::default()
                }]);
            }
            self.reconcile_members(&name).await;
            self.resize_members(&name, now).await;
        }
    }

    /// `vertical.mode = auto`: each running member whose recommendation moved more than 10%
    /// from its size is resized in place, through the ledger (never forced: a growth that
    /// does not fit is left for later) and then in its cgroup, without a restart; never
    /// below what it uses now, and at most once per `min_interval_s`.
    async fn resize_members(&self, name: &str, now: u64) {
        let Some(vertical) = self
            .inner
            .fleets
            .lock()
            .ok()
            .and_then(|f| f.get(name).and_then(|f| f.doc.vertical.clone()))
        else {
            return;
        };
        if vertical.mode != "auto" || self.inner.placed_fleets.get().is_some() {
            return;
        }
        let interval_ms = (vertical.min_interval_s.unwrap_or(300.0) * 1000.0) as u64;
        let members: Vec<AgentDoc> = match self.inner.agents.lock() {
            Ok(a) => a
                .values()
                .filter(|a| {
                    a.doc.fleet.as_deref() == Some(name)
                        && a.doc.state == AgentState::Running
                        && a.resized_ms.is_none_or(|t| now >= t + interval_ms)
                        && now >= a.started_ms + interval_ms
                })
                .map(|a| a.doc.clone())
                .collect(),
            Err(_) => return,
        };
        for m in members {
            let Some(rec) = self
                .recommendations(Some(&format!("agent/{}", m.name)))
                .into_iter()
                .next()
            else {
                continue;
            };
            if let Err(error) = self.resize_member(name, &m, &rec, now).await {
                tracing::warn!(%error, fleet = name, agent = %m.name, "cannot resize");
            }
        }
    }

    async fn resize_member(
        &self,
        fleet: &str,
        m: &AgentDoc,
        rec: &crate::TargetRecommendation,
        now: u64,
    ) -> Result<(), AgentError> {
        use qm_core::quantity::{Unit, parse};
        let wire = |k: &str| {
            m.spec.resources.get(k).and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| Some(v.to_string()))
            })
        };
        let cur_cpu = wire("cpu").and_then(|v| parse(Unit::Millicores, &v).ok());
        let cur_mem = wire("memory").and_then(|v| parse(Unit::Bytes, &v).ok());
        let used = m.usage.clone().unwrap_or_default();
        let used_mem = used
            .get("memory")
            .and_then(|v| parse(Unit::Bytes, v).ok())
            .unwrap_or(0);
        // never below what it uses now
        let new_cpu = ((rec.cpu_cores * 1000.0).ceil() as u64).max(1);
        let new_mem = (rec.memory_bytes.ceil() as u64).max(used_mem + used_mem / 10);
        let moved = |cur: Option<u64>, new: u64| {
            cur.is_none_or(|c| (c as f64 - new as f64).abs() > 0.1 * (c.max(new) as f64))
        };
        if !(moved(cur_cpu, new_cpu) || moved(cur_mem, new_mem)) {
            return Ok(());
        }
        let Some(alloc) = m
            .allocation
            .as_deref()
            .and_then(|a| a.parse::<qm_core::AllocId>().ok())
        else {
            return Ok(());
        };
        let resources = qm_core::Resources::new(new_cpu, new_mem);
        let limits = qm_core::Resources::new(0, new_mem);
        self.engine()
            .resize(alloc, resources.clone(), Some(limits.clone()))
            .await?;
        // the cgroup follows the ledger: the same limits a member of this size would get
        let request = qm_core::Request {
            limits: Some(limits),
            ..qm_core::Request::new(&m.name, resources)
        };
        let confinement = self.confinement_of(&request);
        let applied = self
            .cg(&m.name, |d, g| {
                d.apply(g, &confinement.0).map_err(|e| e.to_string())
            })
            .unwrap_or(Ok(()));
        let (cpu_s, mem_s) = (
            qm_core::quantity::format(Unit::Millicores, new_cpu),
            qm_core::quantity::format(Unit::Bytes, new_mem),
        );
        let doc = {
            let mut agents = self.inner.agents.lock().map_err(|_| EngineError::Stopped)?;
            let Some(a) = agents.get_mut(&m.name) else {
                return Ok(());
            };
            a.doc
                .spec
                .resources
                .insert("cpu".to_owned(), serde_json::Value::String(cpu_s.clone()));
            a.doc.spec.resources.insert(
                "memory".to_owned(),
                serde_json::Value::String(mem_s.clone()),
            );
            let mut lim = a.doc.spec.limits.clone().unwrap_or_default();
            lim.insert(
                "memory".to_owned(),
                serde_json::Value::String(mem_s.clone()),
            );
            a.doc.spec.limits = Some(lim);
            a.doc.qos = Some(confinement.2.clone());
            a.confinement = Some(confinement);
            a.resized_ms = Some(now);
            a.doc.clone()
        };
        self.persist(vec![doc]).await?;
        let reason = format!(
            "{}: resized in place to cpu {cpu_s}, memory {mem_s} (recommended; {}){}",
            m.name,
            rec.reason,
            applied
                .err()
                .map(|e| format!("; its cgroup kept its limits: {e}"))
                .unwrap_or_default()
        );
        tracing::info!(fleet, "{reason}");
        self.engine().publish(vec![qm_proto::EventDoc {
            kind: "fleet.resized".to_owned(),
            at: qm_proto::format_rfc3339(now),
            agent: Some(m.name.clone()),
            reason: Some(format!("{fleet}/{reason}")),
            ..qm_proto::EventDoc::default()
        }]);
        Ok(())
    }

    /// What fleet `name` wants now; `None` when there is no such fleet.
    fn wanted(&self, name: &str) -> Option<Wanted> {
        let fleets = self.inner.fleets.lock().ok()?;
        let f = fleets.get(name)?;
        Some(Wanted {
            replicas: f.doc.replicas as usize,
            generation: f.doc.generation,
            template: f.doc.template.clone(),
            next: f.next_index,
        })
    }

    /// [`reconcile_members`](Self::reconcile_members) for a fleet whose members are placed.
    async fn reconcile_placed(&self, name: &str, placed: &Arc<dyn FleetMembers>) {
        let Some(Wanted {
            replicas: wanted,
            generation,
            template,
            mut next,
        }) = self.wanted(name)
        else {
            return;
        };
        let mut members: Vec<AgentDoc> = placed.list(name).await;
        members.sort_by_key(|d| member_index(&d.name));
        if let Ok(mut f) = self.inner.fleets.lock()
            && let Some(f) = f.get_mut(name)
        {
            f.placed = members
                .iter()
                .map(|d| {
                    let ok = d.state == AgentState::Running && d.health != "unhealthy";
                    (d.name.clone(), ok)
                })
                .collect();
            next = next.max(
                members
                    .iter()
                    .map(|d| member_index(&d.name) + 1)
                    .max()
                    .unwrap_or(0),
            );
            f.next_index = next;
        }
        if members.len() < wanted {
            for _ in members.len()..wanted {
                let mut spec: AgentSpec = template.clone();
                spec.name = format!("{name}-{next}");
                next += 1;
                label_member(&mut spec, name, generation);
                if let Ok(mut f) = self.inner.fleets.lock()
                    && let Some(f) = f.get_mut(name)
                {
                    f.next_index = next;
                }
                if let Err(error) = placed.spawn(spec).await {
                    tracing::warn!(%error, fleet = name, "cannot place a member");
                    break;
                }
            }
        } else if members.len() > wanted {
            for d in members.iter().rev().take(members.len() - wanted) {
                placed.stop(d.name.clone()).await;
            }
        } else if members.iter().all(|d| d.state == AgentState::Running)
            && let Some(old) = members.iter().find(|d| generation_of(&d.spec) < generation)
        {
            // roll: one member of an older template at a time
            placed.stop(old.name.clone()).await;
        }
    }

    async fn reconcile_members(&self, name: &str) {
        if let Some(placed) = self.inner.placed_fleets.get() {
            let placed = placed.clone();
            return self.reconcile_placed(name, &placed).await;
        }
        let Some(Wanted {
            replicas: wanted,
            generation,
            template,
            mut next,
        }) = self.wanted(name)
        else {
            return;
        };
        // (id, state, generation) of live members, oldest first
        let members: Vec<(String, AgentState, u64)> = match self.inner.agents.lock() {
            Ok(a) => {
                let mut m: Vec<(String, AgentState, u64)> = a
                    .values()
                    .filter(|a| a.live() && a.doc.fleet.as_deref() == Some(name))
                    .map(|a| (a.doc.id.clone(), a.doc.state, generation_of(&a.doc.spec)))
                    .collect();
                m.sort_by_key(|(id, _, _)| member_index(id));
                m
            }
            Err(_) => return,
        };
        if members.len() < wanted {
            for _ in members.len()..wanted {
                let mut spec: AgentSpec = template.clone();
                // a name not in use by any agent, live or ended
                loop {
                    spec.name = format!("{name}-{next}");
                    next += 1;
                    let taken = self
                        .inner
                        .agents
                        .lock()
                        .map(|a| a.contains_key(&spec.name))
                        .unwrap_or(true);
                    if !taken {
                        break;
                    }
                }
                label_member(&mut spec, name, generation);
                if let Ok(mut f) = self.inner.fleets.lock()
                    && let Some(f) = f.get_mut(name)
                {
                    f.next_index = next;
                }
                if let Err(error) = self
                    .create(spec, Some(name.to_owned()), super::Requester::daemon())
                    .await
                {
                    tracing::warn!(%error, fleet = name, "cannot add a member");
                    break;
                }
            }
        } else if members.len() > wanted {
            for (id, _, _) in members.iter().rev().take(members.len() - wanted) {
                let _ = self.stop(id, None).await;
            }
        } else if members.iter().all(|(_, s, _)| *s == AgentState::Running)
            && let Some((old, _, _)) = members.iter().find(|(_, _, g)| *g < generation)
        {
            // roll: one member of an older template at a time
            let _ = self.stop(old, None).await;
        }
    }

    /// Fleets back in memory at start.
    pub(super) fn restore_fleets(&self, stored: &[(String, String)]) {
        let max_index: BTreeMap<String, u64> = match self.inner.agents.lock() {
            Ok(a) => {
                let mut m = BTreeMap::new();
                for a in a.values() {
                    if let Some(f) = &a.doc.fleet
                        && let Some(n) = a
                            .doc
                            .id
                            .rsplit('-')
                            .next()
                            .and_then(|n| n.parse::<u64>().ok())
                    {
                        let e = m.entry(f.clone()).or_insert(0);
                        *e = (*e).max(n + 1);
                    }
                }
                m
            }
            Err(_) => BTreeMap::new(),
        };
        let Ok(mut fleets) = self.inner.fleets.lock() else {
            return;
        };
        for (name, body) in stored {
            let Ok(doc) = from_json::<FleetDoc>(body) else {
                tracing::warn!(fleet = %name, "unreadable stored fleet skipped");
                continue;
            };
            let autoscaler = doc
                .autoscale
                .as_ref()
                .and_then(|w| autoscale_spec(w).ok())
                .map(Autoscaler::new);
            fleets.insert(
                name.clone(),
                Fleet {
                    next_index: max_index.get(name).copied().unwrap_or(0),
                    doc,
                    placed: Vec::new(),
                    autoscaler,
                    custom: None,
                    last_eval: 0,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> qm_proto::AutoscaleWire {
        from_json(json).unwrap()
    }

    #[test]
    fn predictive_is_off_unless_asked_and_takes_default_weights() {
        let off = autoscale_spec(&wire(r#"{"min":1,"max":4,"metric":"cpu","target":0.6}"#));
        assert_eq!(off.unwrap().predictive, None);
        let on = autoscale_spec(&wire(
            r#"{"min":1,"max":4,"metric":"cpu","target":0.6,"predictive":{"horizon_s":45}}"#,
        ));
        assert_eq!(
            on.unwrap().predictive,
            Some(Predictive {
                horizon_s: 45.0,
                alpha: DEFAULT_ALPHA,
                beta: DEFAULT_BETA,
            })
        );
    }

    #[test]
    fn bad_predictive_settings_name_their_fields() {
        let bad = autoscale_spec(&wire(
            r#"{"min":1,"max":4,"metric":"cpu","target":0.6,
                "predictive":{"horizon_s":0,"alpha":1.5,"beta":0}}"#,
        ));
        let fields: Vec<String> = bad.unwrap_err().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "autoscale.predictive.horizon_s",
                "autoscale.predictive.alpha",
                "autoscale.predictive.beta"
            ]
        );
    }
}
