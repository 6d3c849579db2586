//! Alert rules as data: a series, label matchers, a comparison with a threshold (and a clear
//! threshold for hysteresis), how long the condition must hold, a severity, labels and a
//! summary; their validation (each problem names its field) and the rules the daemon ships.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A comparison of a value with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `>` (`gt`).
    Gt,
    /// `>=` (`ge`).
    Ge,
    /// `<` (`lt`).
    Lt,
    /// `<=` (`le`).
    Le,
}

impl Op {
    /// Whether `value op threshold` holds (never for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    /// `>`, `>=`, `<` or `<=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// Whether the alert is about values going up (`>`, `>=`).
    pub fn is_upper(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A string that is not an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an operator: use >, >=, <, <= (or gt, ge, lt, le)")]
pub struct ParseOpError(pub String);

impl FromStr for Op {
    type Err = ParseOpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            ">" | "gt" => Ok(Op::Gt),
            ">=" | "ge" | "gte" => Ok(Op::Ge),
            "<" | "lt" => Ok(Op::Lt),
            "<=" | "le" | "lte" => Ok(Op::Le),
            _ => Err(ParseOpError(s.to_owned())),
        }
    }
}

/// How urgent an alert is; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a severity: use info, warning or critical")]
pub struct ParseSeverityError(pub String);

impl FromStr for Severity {
    type Err = ParseSeverityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(ParseSeverityError(s.to_owned())),
        }
    }
}

/// One alert rule. Every sample of `series` whose labels match `matchers` is one alert
/// instance: pending once `value op threshold` holds, firing once it has held for `for_ms`,
/// resolved once the value crosses back past `clear` (the threshold when unset).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique among the rules, 1 to 128 of `[A-Za-z0-9_.:-]`.
    pub name: String,
    /// The metric name (`qm_host_memory_used_ratio`).
    pub series: String,
    /// Label equalities a sample must have (all of them).
    pub matchers: BTreeMap<String, String>,
    /// The comparison.
    pub op: Op,
    /// The value compared with.
    pub threshold: f64,
    /// Hysteresis: a firing alert resolves only once `value op clear` no longer holds. For
    /// `>`/`>=` it must be at most the threshold, for `<`/`<=` at least. Unset: the threshold.
    pub clear: Option<f64>,
    /// How long the condition must hold before the alert fires; 0 fires at once.
    pub for_ms: u64,
    /// How urgent.
    pub severity: Severity,
    /// Labels added to the alert's (winning over the series' on a conflict).
    pub labels: BTreeMap<String, String>,
    /// One sentence for people.
    pub summary: Option<String>,
}

impl Rule {
    /// The threshold a firing alert must cross back past to resolve.
    pub fn clear_threshold(&self) -> f64 {
        self.clear.unwrap_or(self.threshold)
    }

    /// The rule as an expression: `qm_host_pressure_ratio{kind="some"} > 0.1`.
    pub fn expr(&self) -> String {
        let mut s = self.series.clone();
        if !self.matchers.is_empty() {
            let m: Vec<String> = self
                .matchers
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            s.push('{');
            s.push_str(&m.join(","));
            s.push('}');
        }
        format!("{s} {} {}", self.op, self.threshold)
    }

    /// Every problem found, as (field, message); empty when the rule is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut problem = |field: &str, message: String| errors.push((field.to_owned(), message));
        let name_ok = self
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if self.name.is_empty() || self.name.len() > 128 || !name_ok {
            problem(
                "name",
                format!(
                    "{:?} must be 1 to 128 characters of A-Z a-z 0-9 _ . : -",
                    self.name
                ),
            );
        }
        if !is_metric_name(&self.series) {
            problem(
                "series",
                format!(
                    "{:?} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                    self.series
                ),
            );
        }
        if self.matchers.keys().any(|k| k.is_empty()) {
            problem("matchers", "label names must not be empty".to_owned());
        }
        if self.labels.keys().any(|k| k.is_empty()) {
            problem("labels", "label names must not be empty".to_owned());
        }
        if !self.threshold.is_finite() {
            problem(
                "threshold",
                format!("{} is not a finite number", self.threshold),
            );
        }
        if let Some(clear) = self.clear {
            if !clear.is_finite() {
                problem("clear", format!("{clear} is not a finite number"));
            } else if self.threshold.is_finite() {
                if self.op.is_upper() && clear > self.threshold {
                    problem(
                        "clear",
                        format!(
                            "{clear} must be at most the threshold ({}) for {}",
                            self.threshold, self.op
                        ),
                    );
                } else if !self.op.is_upper() && clear < self.threshold {
                    problem(
                        "clear",
                        format!(
                            "{clear} must be at least the threshold ({}) for {}",
                            self.threshold, self.op
                        ),
                    );
                }
            }
        }
        errors
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// The rules the daemon ships (host memory, filesystems, CPU, memory pressure, file
/// descriptors, over series `qm-sys` emits; and the node's memory pressure level, which the
/// monitor emits: it fires with the responder's first step).
pub fn default_rules() -> Vec<Rule> {
    let rule = |name: &str,
                series: &str,
                threshold: f64,
                clear: Option<f64>,
                for_s: u64,
                severity: Severity,
                summary: &str| Rule {
        name: name.to_owned(),
        series: series.to_owned(),
        matchers: BTreeMap::new(),
        op: Op::Gt,
        threshold,
        clear,
        for_ms: for_s * 1_000,
        severity,
        labels: BTreeMap::new(),
        summary: Some(summary.to_owned()),
    };
    let mut pressure = rule(
        "host_memory_pressure",
        "qm_host_pressure_ratio",
        0.10,
        Some(0.05),
        30,
        Severity::Warning,
        "Tasks have been stalled waiting for memory more than 10% of the time (10 s average) \
         for 30 seconds.",
    );
    pressure.matchers = [("resource", "memory"), ("kind", "some"), ("window", "10s")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut level = rule(
        "node_memory_pressure",
        "qm_pressure_level",
        0.5,
        None,
        0,
        Severity::Warning,
        "The node's memory is under pressure (warning or critical): best-effort admission is \
         paused and leaking agents are evicted; see GET /v1/pressure.",
    );
    level.matchers = [("signal".to_owned(), "memory".to_owned())].into();
    vec![
        rule(
            "host_memory_high",
            "qm_host_memory_used_ratio",
            0.90,
            Some(0.85),
            60,
            Severity::Warning,
            "Host memory has been more than 90% used for a minute.",
        ),
        rule(
            "host_memory_critical",
            "qm_host_memory_used_ratio",
            0.97,
            Some(0.95),
            15,
            Severity::Critical,
            "Host memory is more than 97% used: the kernel's OOM killer is close.",
        ),
        rule(
            "host_filesystem_full",
            "qm_host_filesystem_used_ratio",
            0.90,
            Some(0.88),
            300,
            Severity::Warning,
            "A filesystem has been more than 90% full for 5 minutes.",
        ),
        rule(
            "host_cpu_saturated",
            "qm_host_cpu_utilization_ratio",
            0.95,
            Some(0.85),
            300,
            Severity::Warning,
            "Host CPUs have been more than 95% busy for 5 minutes.",
        ),
        pressure,
        level,
        rule(
            "host_fds_exhausted",
            "qm_host_fds_used_ratio",
            0.90,
            None,
            60,
            Severity::Warning,
            "More than 90% of the host's file descriptors have been in use for a minute.",
        ),
    ]
}
