//! Allocation requests and allocations: what an agent asks for, its validation (errors name the
//! field), and the record of who holds what in every state of its life.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;

use crate::ids::{AllocId, NodeIdx, PoolIdx, Timestamp};
use crate::priority::{Priority, Qos};
use crate::resources::{ResourceId, Resources};

/// Labels: small string maps on nodes, allocations and selectors.
pub type Labels = BTreeMap<String, String>;

/// The most labels one object carries.
pub const MAX_LABELS: usize = 64;

/// One invalid field of a request or spec, e.g. `agent`: `must be 1 to 128 characters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path as the client wrote it (`resources.memory`, `labels.team`).
    pub field: String,
    /// What is wrong with it, lowercase, no trailing period.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every invalid field found in one request or spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

/// Checks a name (agent, pool, node): 1 to 128 of `[A-Za-z0-9._:-]`.
pub fn check_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if name.is_empty() || name.len() > 128 || !ok_chars {
        errors.push(FieldError::new(
            field,
            format!("{name:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"),
        ));
    }
}

/// Checks a label map: at most [`MAX_LABELS`] entries, keys 1 to 253 characters, values at
/// most 256, none with a control character.
pub fn check_labels(field: &str, labels: &Labels, errors: &mut Vec<FieldError>) {
    if labels.len() > MAX_LABELS {
        errors.push(FieldError::new(
            field,
            format!("at most {MAX_LABELS} labels, got {}", labels.len()),
        ));
    }
    for (k, v) in labels {
        if k.is_empty() || k.chars().count() > 253 || k.chars().any(char::is_control) {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                "keys are 1 to 253 printable characters",
            ));
        }
        if v.chars().count() > 256 || v.chars().any(char::is_control) {
            errors.push(FieldError::new(
                format!("{field}.{k}"),
                "values are at most 256 printable characters",
            ));
        }
    }
}

/// Where an allocation may go relative to the allocations already granted (Kubernetes'
/// topology spread constraints and inter-pod affinity, over allocations' labels). A node's
/// domain under a key is its label of that key (`qm.dev/node`: its name); a node without the
/// key is in no domain and never qualifies for a rule on that key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// Keep the matching allocations balanced across the domains.
    pub spread: Vec<Spread>,
    /// Land only in a domain already holding a matching allocation (waived for the first
    /// one when the request matches its own term).
    pub affinity: Vec<Term>,
    /// Never land in a domain holding a matching allocation.
    pub anti_affinity: Vec<Term>,
}

/// A spread constraint: after placing, the domain holding the most matching allocations holds
/// at most `max_skew` more than the one holding the fewest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    pub topology_key: String,
    pub max_skew: u32,
    pub match_labels: Labels,
}

/// An affinity term: allocations whose labels include `match_labels`, counted per domain of
/// `topology_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub topology_key: String,
    pub match_labels: Labels,
}

/// The most rules of each kind one request carries.
pub const MAX_TOPOLOGY_RULES: usize = 8;

impl Topology {
    /// True when it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.spread.is_empty() && self.affinity.is_empty() && self.anti_affinity.is_empty()
    }

    fn check(&self, errors: &mut Vec<FieldError>) {
        let key = |field: String, k: &str, errors: &mut Vec<FieldError>| {
            if k.is_empty() || k.chars().count() > 253 || k.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    field,
                    "a label key, 1 to 253 printable characters",
                ));
            }
        };
        let terms = |name: &str, list: &[Term], errors: &mut Vec<FieldError>| {
            if list.len() > MAX_TOPOLOGY_RULES {
                errors.push(FieldError::new(
                    name,
                    format!("at most {MAX_TOPOLOGY_RULES} terms"),
                ));
            }
            for (i, t) in list.iter().enumerate() {
                key(format!("{name}[{i}].topology_key"), &t.topology_key, errors);
                if t.match_labels.is_empty() {
                    errors.push(FieldError::new(
                        format!("{name}[{i}].match_labels"),
                        "name at least one label",
                    ));
                }
                check_labels(
                    &format!("{name}[{i}].match_labels"),
                    &t.match_labels,
                    errors,
                );
            }
        };
        if self.spread.len() > MAX_TOPOLOGY_RULES {
            errors.push(FieldError::new(
                "spread",
                format!("at most {MAX_TOPOLOGY_RULES} constraints"),
            ));
        }
        for (i, c) in self.spread.iter().enumerate() {
            key(format!("spread[{i}].topology_key"), &c.topology_key, errors);
            if !(1..=1000).contains(&c.max_skew) {
                errors.push(FieldError::new(
                    format!("spread[{i}].max_skew"),
                    format!("{} is not 1..=1000", c.max_skew),
                ));
            }
            if c.match_labels.is_empty() {
                errors.push(FieldError::new(
                    format!("spread[{i}].match_labels"),
                    "name at least one label",
                ));
            }
            check_labels(
                &format!("spread[{i}].match_labels"),
                &c.match_labels,
                errors,
            );
        }
        terms("affinity", &self.affinity, errors);
        terms("anti_affinity", &self.anti_affinity, errors);
    }
}

/// Whether `labels` include every one of `wanted`.
pub fn labels_match(labels: &Labels, wanted: &Labels) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What an agent asks the ledger for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The agent's name, 1 to 128 of `[A-Za-z0-9._:-]`.
    pub agent: String,
    /// The pool whose share this comes from.
    pub pool: String,
    /// What must be set aside (requests, in Kubernetes' words); may be empty for best-effort.
    pub resources: Resources,
    /// The most it may use; none means unbounded (burstable).
    pub limits: Option<Resources>,
    /// 0..=1000; only strictly lower priorities are preempted for it.
    pub priority: Priority,
    /// Whether higher priorities (or reclaiming pools) may take it back.
    pub preemptible: bool,
    /// A lease: the grant expires unless renewed within this many milliseconds.
    pub ttl_ms: Option<u64>,
    /// Wait in the queue when it does not fit now, instead of being refused.
    pub queue: bool,
    /// Only nodes carrying all these labels qualify.
    pub node_selector: Labels,
    /// Free-form labels carried on the allocation.
    pub labels: Labels,
    /// Spread and affinity rules against the allocations already granted.
    pub topology: Topology,
}

impl Request {
    /// A request from `agent` for `resources` in pool `default`, with every default of the API.
    pub fn new(agent: &str, resources: Resources) -> Self {
        Self {
            agent: agent.to_owned(),
            pool: "default".to_owned(),
            resources,
            limits: None,
            priority: Priority::NORMAL,
            preemptible: true,
            ttl_ms: None,
            queue: false,
            node_selector: Labels::new(),
            labels: Labels::new(),
            topology: Topology::default(),
        }
    }

    /// Checks every field, returning all problems at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        check_name("agent", &self.agent, &mut errors);
        check_name("pool", &self.pool, &mut errors);
        if let Some(limits) = &self.limits {
            for (id, request) in self.resources.iter() {
                let limit = limits.get(id);
                if limit != 0 && limit < request {
                    errors.push(FieldError::new(
                        format!("limits.{}", resource_field(id)),
                        format!("limit {limit} is below the request {request}"),
                    ));
                }
            }
        }
        if self.ttl_ms == Some(0) {
            errors.push(FieldError::new("ttl_s", "must be positive"));
        }
        check_labels("node_selector", &self.node_selector, &mut errors);
        check_labels("labels", &self.labels, &mut errors);
        self.topology.check(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

fn resource_field(id: ResourceId) -> String {
    match id {
        ResourceId::CPU => "cpu".to_owned(),
        ResourceId::MEMORY => "memory".to_owned(),
        ResourceId::EPHEMERAL_STORAGE => "ephemeral-storage".to_owned(),
        ResourceId::GPU => "gpu".to_owned(),
        other => format!("extended[{}]", other.index()),
    }
}

/// Where an allocation is in its life. `Queued` and `Granted` are live; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocState {
    /// Waiting for capacity.
    Queued,
    /// Holding capacity on a node.
    Granted,
    /// Given back by its holder.
    Released,
    /// Taken back for a higher priority request or a pool reclaiming its guarantee.
    Preempted,
    /// Its lease ran out without renewal.
    Expired,
    /// Taken back to relieve pressure.
    Evicted,
    /// Withdrawn while still queued.
    Cancelled,
    /// Its node was lost.
    Lost,
}

impl AllocState {
    /// True for the states that hold or wait for capacity.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Queued | Self::Granted)
    }

    /// The state's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Granted => "granted",
            Self::Released => "released",
            Self::Preempted => "preempted",
            Self::Expired => "expired",
            Self::Evicted => "evicted",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
        }
    }
}

/// An allocation: a request, where it stands, and where it runs.
///
/// Kept small (the ledger holds one per live allocation): what most allocations lack (limits,
/// labels, a selector) and what only ended ones carry (a reason, a preemptor) sit behind boxes
/// that exist only when there is something in them.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub(crate) id: AllocId,
    pub(crate) agent: Box<str>,
    pub(crate) resources: Resources,
    pub(crate) extra: Option<Box<Extra>>,
    pub(crate) ending: Option<Box<Ending>>,
    pub(crate) ttl_ms: Option<NonZeroU64>,
    pub(crate) created_at: Timestamp,
    pub(crate) granted_at: Option<Timestamp>,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) ended_at: Option<Timestamp>,
    pub(crate) grant_seq: u64,
    pub(crate) pool: PoolIdx,
    pub(crate) node: Option<NodeIdx>,
    pub(crate) priority: Priority,
    pub(crate) qos: Qos,
    pub(crate) preemptible: bool,
    pub(crate) state: AllocState,
}

/// The rarely set parts of a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Extra {
    pub(crate) limits: Option<Resources>,
    pub(crate) labels: Labels,
    pub(crate) node_selector: Labels,
    pub(crate) topology: Topology,
}

/// Why an allocation ended, when there is more to say than its state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ending {
    pub(crate) reason: Option<Box<str>>,
    pub(crate) preempted_by: Option<AllocId>,
}

static NO_LABELS: Labels = Labels::new();

impl Allocation {
    /// The id.
    pub fn id(&self) -> AllocId {
        self.id
    }
    /// The agent that asked.
    pub fn agent(&self) -> &str {
        &self.agent
    }
    /// The pool it counts against.
    pub fn pool(&self) -> PoolIdx {
        self.pool
    }
    /// The node it holds capacity on (none while queued).
    pub fn node(&self) -> Option<NodeIdx> {
        self.node
    }
    /// What is set aside for it.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }
    /// Its limits, if any.
    pub fn limits(&self) -> Option<&Resources> {
        self.extra.as_ref()?.limits.as_ref()
    }
    /// Its priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }
    /// Its QoS class.
    pub fn qos(&self) -> Qos {
        self.qos
    }
    /// Whether it may be preempted.
    pub fn preemptible(&self) -> bool {
        self.preemptible
    }
    /// Its state.
    pub fn state(&self) -> AllocState {
        self.state
    }
    /// Why it ended (or why it waits), in words.
    pub fn reason(&self) -> Option<&str> {
        self.ending.as_ref()?.reason.as_deref()
    }
    /// The allocation that preempted it.
    pub fn preempted_by(&self) -> Option<AllocId> {
        self.ending.as_ref()?.preempted_by
    }
    /// Its labels.
    pub fn labels(&self) -> &Labels {
        self.extra.as_ref().map_or(&NO_LABELS, |e| &e.labels)
    }
    /// The labels a node must carry to hold it.
    pub fn node_selector(&self) -> &Labels {
        self.extra.as_ref().map_or(&NO_LABELS, |e| &e.node_selector)
    }
    /// Its spread and affinity rules.
    pub fn topology(&self) -> &Topology {
        static NONE: Topology = Topology {
            spread: Vec::new(),
            affinity: Vec::new(),
            anti_affinity: Vec::new(),
        };
        self.extra.as_ref().map_or(&NONE, |e| &e.topology)
    }
    /// Its lease length in milliseconds, if it has a lease.
    pub fn ttl_ms(&self) -> Option<u64> {
        self.ttl_ms.map(NonZeroU64::get)
    }
    /// When it was asked for.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }
    /// When it was granted.
    pub fn granted_at(&self) -> Option<Timestamp> {
        self.granted_at
    }
    /// When its lease runs out.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }
    /// When it ended.
    pub fn ended_at(&self) -> Option<Timestamp> {
        self.ended_at
    }
    /// The order of its grant among all grants (later grants have larger numbers; 0 if never).
    pub fn grant_seq(&self) -> u64 {
        self.grant_seq
    }

    pub(crate) fn from_request(id: AllocId, pool: PoolIdx, req: Request, now: Timestamp) -> Self {
        let qos = Qos::derive(&req.resources, req.limits.as_ref());
        let plain = req.limits.is_none()
            && req.labels.is_empty()
            && req.node_selector.is_empty()
            && req.topology.is_empty();
        let extra = (!plain).then(|| {
            Box::new(Extra {
                limits: req.limits,
                labels: req.labels,
                node_selector: req.node_selector,
                topology: req.topology,
            })
        });
        Self {
            id,
            agent: req.agent.into_boxed_str(),
            resources: req.resources,
            extra,
            ending: None,
            ttl_ms: req.ttl_ms.and_then(NonZeroU64::new),
            created_at: now,
            granted_at: None,
            expires_at: None,
            ended_at: None,
            grant_seq: 0,
            pool,
            node: None,
            priority: req.priority,
            qos,
            preemptible: req.preemptible,
            state: AllocState::Queued,
        }
    }

    /// Records how it ended.
    pub(crate) fn finish(
        &mut self,
        to: AllocState,
        now: Timestamp,
        reason: Option<Box<str>>,
        by: Option<AllocId>,
    ) {
        self.state = to;
        self.ended_at = Some(now);
        self.ending = (reason.is_some() || by.is_some()).then(|| {
            Box::new(Ending {
                reason,
                preempted_by: by,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_stays_small() {
        // The ledger holds one per live allocation; the memory budget is 256 bytes each,
        // indexes included. Growing this struct needs a reason.
        assert!(
            std::mem::size_of::<Allocation>() <= 144,
            "{}",
            std::mem::size_of::<Allocation>()
        );
        assert_eq!(
            std::mem::size_of::<Option<Allocation>>(),
            std::mem::size_of::<Allocation>()
        );
    }

    #[test]
    fn validation_names_every_bad_field() {
        let mut req = Request::new("coder 1", Resources::new(500, 1 << 30));
        req.pool = String::new();
        req.limits = Some(Resources::new(250, 2 << 30));
        req.ttl_ms = Some(0);
        req.labels.insert(String::new(), "x".to_owned());
        let err = req.validate().unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["agent", "pool", "limits.cpu", "ttl_s", "labels."]);
        assert!(
            err.to_string()
                .contains("limits.cpu: limit 250 is below the request 500")
        );
        assert!(
            Request::new("coder-1.a:b_c", Resources::default())
                .validate()
                .is_ok()
        );
        assert!(
            Request::new(&"a".repeat(129), Resources::default())
                .validate()
                .is_err()
        );
    }
}
