//! A state document's agents and fleets brought into this daemon, as `qm apply` would bring
//! them: fleets created (or updated), and each live agent that does not run here yet started
//! from its spec; under its imported allocation when that allocation is granted on this node,
//! else by a new request. What is left is said, with why: ended agents, fleets' members (their
//! fleet starts them), adopted processes (a pid means nothing on another host), agents that
//! run here already, and any refusal.

use qm_core::AllocId;
use qm_proto::{AgentDoc, FleetDoc, FleetSpec, ImportReport, LeftAgent};

use super::{DYNAMIC_UIDS, Requester, Supervisor};
use qm_engine::Lookup;

impl Supervisor {
    /// Brings `fleets` and `agents` in (see the module's documentation).
    pub async fn import(&self, agents: &[AgentDoc], fleets: &[FleetDoc]) -> ImportReport {
        let mut report = ImportReport::default();
        for f in fleets {
            let spec = FleetSpec {
                name: f.name.clone(),
                template: fresh(f.template.clone()),
                replicas: f.replicas,
                autoscale: f.autoscale.clone(),
                vertical: f.vertical.clone(),
            };
            let create = self.fleet(&f.name).is_none();
            match self.put_fleet(spec, create).await {
                Ok(_) => report.fleets.push(f.name.clone()),
                Err(e) => report.left.push(LeftAgent {
                    name: format!("fleet/{}", f.name),
                    reason: e.to_string(),
                }),
            }
        }
        for a in agents {
            let left = |reason: &str| LeftAgent {
                name: a.name.clone(),
                reason: reason.to_owned(),
            };
            if !a.state.is_live() {
                report
                    .left
                    .push(left(&format!("it had ended ({})", a.state)));
                continue;
            }
            if a.fleet.is_some() {
                report
                    .left
                    .push(left("a fleet's member: its fleet starts its own"));
                continue;
            }
            if a.spec.pid.is_some() || a.adopted {
                report.left.push(left(
                    "an adopted process: its pid means nothing on this host",
                ));
                continue;
            }
            if self.get(&a.name).is_some_and(|d| d.state.is_live()) {
                report.left.push(left("it runs here already"));
                continue;
            }
            let mut spec = fresh(a.spec.clone());
            // its imported allocation, when granted on this node, is its own again
            spec.allocation = match a.allocation.as_deref().map(str::parse::<AllocId>) {
                Some(Ok(id)) => match self.engine().get(id).await {
                    Ok(Lookup::Live(doc))
                        if doc.state == "granted"
                            && doc.node.as_deref() == Some(self.engine().node_name()) =>
                    {
                        Some(doc.id.clone())
                    }
                    _ => None,
                },
                _ => None,
            };
            match self.create(spec, None, Requester::daemon()).await {
                Ok(_) => report.started.push(a.name.clone()),
                Err(e) => report.left.push(left(&e.to_string())),
            }
        }
        report
    }
}

/// A spec as another daemon wrote it, made for this one: no pid, and no uid of that host's
/// dynamic range (this host gives its own).
fn fresh(mut spec: qm_proto::AgentSpec) -> qm_proto::AgentSpec {
    spec.pid = None;
    if spec
        .user
        .as_deref()
        .and_then(|u| u.parse::<u32>().ok())
        .is_some_and(|u| DYNAMIC_UIDS.contains(&u))
    {
        spec.user = None;
    }
    spec
}
