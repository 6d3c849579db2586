//! `GET /metrics`: the allocator's series and the monitor's (host, agents, the daemon itself)
//! in the Prometheus text exposition format, or OpenMetrics 1.0 when the scraper asks for it.
//! Names end in their unit; label values are bounded (node, pool, resource, device and agent
//! names, decision results).

use std::collections::BTreeMap;
use std::fmt::Write;

use qm_engine::metrics::{LATENCY_BUCKETS, Outcome, Snapshot};
use qm_sys::metric::{Kind, Sample};

/// Which exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0: counter families named without `_total`, `# EOF` at the end.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: &str) -> Self {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `# HELP` and `# TYPE` lines of a family. OpenMetrics names a counter family without
/// its `_total` suffix (the samples keep it).
fn family(out: &mut String, fmt: Format, name: &str, kind: &str, help: &str) {
    let name = match fmt {
        Format::OpenMetrics if kind == "counter" => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A value as the exposition formats spell it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// The monitor's gauges and counters (rates are for history and JSON: Prometheus derives its
/// own), one family per name, in name order.
fn render_samples<'a>(out: &mut String, fmt: Format, samples: impl Iterator<Item = &'a Sample>) {
    let mut families: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        if s.desc.kind != Kind::Rate {
            families.entry(s.desc.name).or_default().push(s);
        }
    }
    for (name, members) in families {
        let Some(first) = members.first() else {
            continue;
        };
        let kind = if first.desc.kind == Kind::Counter {
            "counter"
        } else {
            "gauge"
        };
        family(out, fmt, name, kind, first.desc.help);
        for s in members {
            out.push_str(name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(s.value));
        }
    }
}

/// What a resource's amounts are measured in: (metric suffix, divisor to that unit).
fn unit(resource: &str) -> (&'static str, f64) {
    match resource {
        "cpu" => ("cores", 1000.0),
        "memory" | "ephemeral-storage" => ("bytes", 1.0),
        _ => ("count", 1.0),
    }
}

/// Renders the allocator's snapshot `s` and the monitor's `samples` (host and daemon) and
/// `agents`.
pub fn render(s: &Snapshot, samples: &[Sample], agents: &[Sample], fmt: Format) -> String {
    let mut out = String::with_capacity(4096 + (samples.len() + agents.len()) * 96);
    family(
        &mut out,
        fmt,
        "qm_allocation_decisions_total",
        "counter",
        "Allocation requests decided, by result.",
    );
    for (o, n) in Outcome::ALL.iter().zip(s.counters.decisions) {
        let _ = writeln!(
            out,
            "qm_allocation_decisions_total{{result=\"{}\"}} {n}",
            o.label()
        );
    }
    family(
        &mut out,
        fmt,
        "qm_allocation_preemptions_total",
        "counter",
        "Allocations preempted for higher priorities or reclaiming pools.",
    );
    let _ = writeln!(
        out,
        "qm_allocation_preemptions_total {}",
        s.counters.preempted
    );
    family(
        &mut out,
        fmt,
        "qm_allocation_decision_duration_seconds",
        "histogram",
        "Time the ledger took to decide a request.",
    );
    for (b, n) in LATENCY_BUCKETS.iter().zip(s.counters.latency_buckets) {
        let _ = writeln!(
            out,
            "qm_allocation_decision_duration_seconds_bucket{{le=\"{b}\"}} {n}"
        );
    }
    let total = s.counters.latency_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "qm_allocation_decision_duration_seconds_bucket{{le=\"+Inf\"}} {total}"
    );
    let _ = writeln!(
        out,
        "qm_allocation_decision_duration_seconds_sum {}",
        s.counters.latency_sum
    );
    let _ = writeln!(out, "qm_allocation_decision_duration_seconds_count {total}");
    family(
        &mut out,
        fmt,
        "qm_allocations",
        "gauge",
        "Live allocations, by state.",
    );
    let _ = writeln!(
        out,
        "qm_allocations{{state=\"granted\"}} {}",
        s.live_granted
    );
    let _ = writeln!(out, "qm_allocations{{state=\"queued\"}} {}", s.live_queued);
    for (what, help) in [
        ("allocatable", "What a node may hand out"),
        ("allocated", "What a node has handed out"),
    ] {
        for suffix in ["cores", "bytes", "count"] {
            let name = format!("qm_node_{what}_{suffix}");
            family(
                &mut out,
                fmt,
                &name,
                "gauge",
                &format!("{help}, per resource measured in {suffix}."),
            );
            for n in &s.nodes {
                for (r, allocatable, allocated) in &n.resources {
                    let (u, div) = unit(r);
                    if u != suffix {
                        continue;
                    }
                    let v = if what == "allocatable" {
                        *allocatable
                    } else {
                        *allocated
                    };
                    #[allow(clippy::cast_precision_loss)]
                    let v = v as f64 / div;
                    let _ = writeln!(
                        out,
                        "{name}{{node=\"{}\",resource=\"{}\"}} {v}",
                        label(&n.node),
                        label(r)
                    );
                }
            }
        }
    }
    family(
        &mut out,
        fmt,
        "qm_node_ready",
        "gauge",
        "1 when the node takes grants.",
    );
    for n in &s.nodes {
        let _ = writeln!(
            out,
            "qm_node_ready{{node=\"{}\"}} {}",
            label(&n.node),
            u8::from(n.ready)
        );
    }
    family(
        &mut out,
        fmt,
        "qm_pool_queued_requests",
        "gauge",
        "Requests waiting in a pool's queue.",
    );
    for (p, q, _) in &s.pools {
        let _ = writeln!(out, "qm_pool_queued_requests{{pool=\"{}\"}} {q}", label(p));
    }
    family(
        &mut out,
        fmt,
        "qm_pool_dominant_share_ratio",
        "gauge",
        "A pool's dominant share of the ready cluster.",
    );
    for (p, _, share) in &s.pools {
        let _ = writeln!(
            out,
            "qm_pool_dominant_share_ratio{{pool=\"{}\"}} {share}",
            label(p)
        );
    }
    family(
        &mut out,
        fmt,
        "qm_store_transactions_total",
        "counter",
        "Transactions the store committed (each one fsync).",
    );
    let _ = writeln!(out, "qm_store_transactions_total {}", s.store_transactions);
    family(
        &mut out,
        fmt,
        "qm_store_batches_total",
        "counter",
        "Change batches the store committed; batches per transaction is the group-commit factor.",
    );
    let _ = writeln!(out, "qm_store_batches_total {}", s.store_batches);
    render_samples(&mut out, fmt, samples.iter().chain(agents));
    if fmt == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// The recommender's series (`qm_recommendation_*`), one set per target, appended to an
/// exposition (before OpenMetrics' `# EOF`).
pub fn append_recommendations(
    text: &mut String,
    fmt: Format,
    items: &[qm_supervisor::TargetRecommendation],
) {
    if items.is_empty() {
        return;
    }
    let eof = text.ends_with("# EOF\n");
    if eof {
        text.truncate(text.len() - "# EOF\n".len());
    }
    type Read = fn(&qm_supervisor::TargetRecommendation) -> f64;
    let series: [(&str, &str, Read); 4] = [
        (
            "qm_recommendation_cpu_cores",
            "Cores each target should request, learned from its usage.",
            |r| r.cpu_cores,
        ),
        (
            "qm_recommendation_memory_bytes",
            "Memory each target should request (and be limited to), learned from its usage.",
            |r| r.memory_bytes,
        ),
        (
            "qm_recommendation_confidence",
            "How much history stands behind each target's recommendation, 0..1.",
            |r| r.confidence,
        ),
        (
            "qm_recommendation_samples",
            "Usage samples behind each target's recommendation.",
            |r| r.samples as f64,
        ),
    ];
    for (name, help, value) in series {
        family(text, fmt, name, "gauge", help);
        for r in items {
            let _ = writeln!(
                text,
                "{name}{{target=\"{}\"}} {}",
                label(&r.target),
                number(value(r))
            );
        }
    }
    if eof {
        text.push_str("# EOF\n");
    }
}

#[cfg(test)]
mod tests {
    use qm_engine::metrics::{Counters, NodeAmounts};

    use super::*;

    #[test]
    fn renders_every_family_once_with_units() {
        let counters = Counters {
            decisions: [3, 1, 2, 0],
            latency_buckets: [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 6],
            ..Counters::default()
        };
        let s = Snapshot {
            counters,
            nodes: vec![NodeAmounts {
                node: "n\"1".to_owned(),
                ready: true,
                resources: vec![
                    ("cpu".into(), 2000, 500),
                    ("memory".into(), 1024, 0),
                    ("gpu".into(), 2, 1),
                ],
            }],
            pools: vec![("default".to_owned(), 4, 0.25)],
            live_granted: 3,
            live_queued: 4,
            store_transactions: 2,
            store_batches: 7,
        };
        let text = render(&s, &[], &[], Format::Prometheus);
        assert!(text.contains("qm_allocation_decisions_total{result=\"granted\"} 3\n"));
        assert!(
            text.contains("qm_node_allocatable_cores{node=\"n\\\"1\",resource=\"cpu\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("qm_node_allocated_cores{node=\"n\\\"1\",resource=\"cpu\"} 0.5\n"));
        assert!(text.contains("qm_node_allocatable_count{node=\"n\\\"1\",resource=\"gpu\"} 2\n"));
        assert!(text.contains("qm_allocation_decision_duration_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(text.contains("qm_pool_queued_requests{pool=\"default\"} 4\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name} declared twice"
            );
        }
    }
}
