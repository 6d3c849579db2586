//! Alerts: rules evaluated over each collection's samples, and the state machine of every
//! alert instance (one per rule and matching series). Pure logic: time is a parameter (unix
//! milliseconds), nothing here reads a clock.
//!
//! An instance is inactive until `value op threshold` holds; then pending; firing once the
//! condition has held at every evaluation for `for_ms` (at once when 0); resolved once the
//! value crosses back past the rule's clear threshold (between clear and threshold it keeps
//! firing). A pending instance whose condition fails goes back to inactive silently. Each
//! episode yields exactly one [`Transition::Firing`] and one [`Transition::Resolved`]. A
//! firing instance whose series disappears (an agent ended) resolves with the note
//! "series absent"; a pending one is dropped. NaN values change nothing. Resolved alerts
//! leave the active set for a bounded list of the most recent ones.

mod rule;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use qm_core::{FieldError, ValidationErrors};
use qm_sys::metric::Sample;

pub use rule::{Op, ParseOpError, ParseSeverityError, Rule, Severity, default_rules};

/// Unix time in milliseconds.
pub type UnixMs = u64;

/// How many resolved alerts [`AlertEngine::alerts`] keeps after they leave the active set.
pub const RESOLVED_KEPT: usize = 100;

/// The note of an alert resolved because its series stopped coming.
pub const SERIES_ABSENT: &str = "series absent";

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    /// The condition has held for the rule's `for`.
    Firing,
    /// It fired and then cleared (or its series disappeared).
    Resolved,
}

impl AlertState {
    /// `pending`, `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule over one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The series' labels plus the rule's (the rule's win on a conflict).
    pub labels: BTreeMap<String, String>,
    /// Pending, firing or resolved.
    pub state: AlertState,
    /// The last value seen.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The rule as an expression: `qm_host_memory_used_ratio > 0.9`.
    pub expr: String,
    /// The rule's summary.
    pub summary: Option<String>,
    /// When the condition started holding.
    pub pending_since: UnixMs,
    /// When it fired.
    pub fired_at: Option<UnixMs>,
    /// When it resolved.
    pub resolved_at: Option<UnixMs>,
    /// Why it resolved, when not by its value ("series absent").
    pub note: Option<String>,
    /// The rule's name and the series' labels, `rule{label="value",...}`: stable for one
    /// rule and series, so notifications can be de-duplicated.
    pub fingerprint: String,
}

/// A change worth notifying.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The alert started firing (once per episode).
    Firing(Alert),
    /// The alert resolved (once per episode).
    Resolved(Alert),
}

impl Transition {
    /// The alert as it is after the transition.
    pub fn alert(&self) -> &Alert {
        match self {
            Transition::Firing(a) | Transition::Resolved(a) => a,
        }
    }
}

/// A series' labels, sorted by name: an instance's key within its rule.
type SeriesLabels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Instance {
    alert: Alert,
    /// The evaluation that last saw the series.
    seen: u64,
}

/// The rules and the state of every pending and firing instance.
#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    /// Rule indices by series name.
    by_series: BTreeMap<String, Vec<usize>>,
    /// Pending and firing instances, per rule (same index as `rules`).
    active: Vec<BTreeMap<SeriesLabels, Instance>>,
    /// Resolved alerts, newest first, at most [`RESOLVED_KEPT`].
    resolved: VecDeque<Alert>,
    /// Evaluations so far.
    epoch: u64,
}

impl AlertEngine {
    /// An engine over `rules`, each valid and with a distinct name; problems name the field
    /// as `rules[i].field`.
    pub fn new(rules: Vec<Rule>) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in rules.iter().enumerate() {
            for (field, message) in r.validate() {
                errors.push(FieldError {
                    field: format!("rules[{i}].{field}"),
                    message,
                });
            }
            if let Some(first) = names.insert(&r.name, i) {
                errors.push(FieldError {
                    field: format!("rules[{i}].name"),
                    message: format!("{:?} is already the name of rules[{first}]", r.name),
                });
            }
        }
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        let mut by_series: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in rules.iter().enumerate() {
            by_series.entry(r.series.clone()).or_default().push(i);
        }
        Ok(AlertEngine {
            active: rules.iter().map(|_| BTreeMap::new()).collect(),
            rules,
            by_series,
            resolved: VecDeque::new(),
            epoch: 0,
        })
    }

    /// The rules in force.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluates every rule over one collection taken at `now`; returns the firing and
    /// resolved transitions, in sample order, then those of series that disappeared.
    pub fn evaluate(&mut self, now: UnixMs, samples: &[Sample]) -> Vec<Transition> {
        self.epoch += 1;
        let mut out = Vec::new();
        for s in samples {
            let Some(idxs) = self.by_series.get(s.desc.name) else {
                continue;
            };
            for &i in idxs {
                let (Some(rule), Some(active)) = (self.rules.get(i), self.active.get_mut(i)) else {
                    continue;
                };
                if rule_matches(rule, s) {
                    let step = Step {
                        rule,
                        now,
                        epoch: self.epoch,
                    };
                    step.observe(s, active, &mut self.resolved, &mut out);
                }
            }
        }
        for (rule, active) in self.rules.iter().zip(self.active.iter_mut()) {
            let gone: Vec<SeriesLabels> = active
                .iter()
                .filter(|(_, inst)| inst.seen != self.epoch)
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                let Some(inst) = active.remove(&key) else {
                    continue;
                };
                if inst.alert.state == AlertState::Firing {
                    let mut alert = inst.alert;
                    alert.note = Some(SERIES_ABSENT.to_owned());
                    resolve(alert, now, &mut self.resolved, &mut out);
                } else {
                    tracing::trace!(rule = %rule.name, "pending alert dropped: series absent");
                }
            }
        }
        out
    }

    /// Pending and firing alerts (firing first, then by severity, most severe first, rule
    /// and fingerprint), then the recently resolved ones, newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut active: Vec<&Alert> = self
            .active
            .iter()
            .flat_map(|m| m.values().map(|i| &i.alert))
            .collect();
        active.sort_by(|a, b| {
            (b.state == AlertState::Firing)
                .cmp(&(a.state == AlertState::Firing))
                .then(b.severity.cmp(&a.severity))
                .then_with(|| a.rule.cmp(&b.rule))
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        active
            .into_iter()
            .chain(self.resolved.iter())
            .cloned()
            .collect()
    }
}

fn rule_matches(rule: &Rule, s: &Sample) -> bool {
    rule.matchers
        .iter()
        .all(|(mk, mv)| s.labels.iter().any(|(k, v)| k == mk && v == mv))
}

/// One rule's view of one evaluation.
struct Step<'a> {
    rule: &'a Rule,
    now: UnixMs,
    epoch: u64,
}

impl Step<'_> {
    /// Applies one matching sample to its instance.
    fn observe(
        &self,
        s: &Sample,
        active: &mut BTreeMap<SeriesLabels, Instance>,
        resolved: &mut VecDeque<Alert>,
        out: &mut Vec<Transition>,
    ) {
        let rule = self.rule;
        let value = s.value;
        let holds = rule.op.holds(value, rule.threshold);
        if !holds && active.is_empty() {
            return;
        }
        let mut key: SeriesLabels = s.labels.clone();
        key.sort();
        let Some(inst) = active.get_mut(&key) else {
            if holds {
                let mut inst = Instance {
                    alert: self.new_alert(&key, value),
                    seen: self.epoch,
                };
                if rule.for_ms == 0 {
                    self.fire(&mut inst.alert, out);
                }
                active.insert(key, inst);
            }
            return;
        };
        inst.seen = self.epoch;
        if value.is_nan() {
            return;
        }
        inst.alert.value = value;
        match inst.alert.state {
            AlertState::Pending if !holds => {
                active.remove(&key);
            }
            AlertState::Pending => {
                if self.now.saturating_sub(inst.alert.pending_since) >= rule.for_ms {
                    self.fire(&mut inst.alert, out);
                }
            }
            AlertState::Firing => {
                if !rule.op.holds(value, rule.clear_threshold())
                    && let Some(inst) = active.remove(&key)
                {
                    resolve(inst.alert, self.now, resolved, out);
                }
            }
            AlertState::Resolved => {
                active.remove(&key);
            }
        }
    }

    fn new_alert(&self, key: &SeriesLabels, value: f64) -> Alert {
        let rule = self.rule;
        let mut labels: BTreeMap<String, String> = key
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let series_labels: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        Alert {
            rule: rule.name.clone(),
            severity: rule.severity,
            labels,
            state: AlertState::Pending,
            value,
            threshold: rule.threshold,
            expr: rule.expr(),
            summary: rule.summary.clone(),
            pending_since: self.now,
            fired_at: None,
            resolved_at: None,
            note: None,
            fingerprint: format!("{}{{{}}}", rule.name, series_labels.join(",")),
        }
    }

    fn fire(&self, alert: &mut Alert, out: &mut Vec<Transition>) {
        alert.state = AlertState::Firing;
        alert.fired_at = Some(self.now);
        out.push(Transition::Firing(alert.clone()));
    }
}

fn resolve(
    mut alert: Alert,
    now: UnixMs,
    resolved: &mut VecDeque<Alert>,
    out: &mut Vec<Transition>,
) {
    alert.state = AlertState::Resolved;
    alert.resolved_at = Some(now);
    out.push(Transition::Resolved(alert.clone()));
    resolved.push_front(alert);
    resolved.truncate(RESOLVED_KEPT);
}
