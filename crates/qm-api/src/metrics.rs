//! `GET /metrics`: the allocator's series in the Prometheus text exposition format. Names end
//! in their unit; label values are bounded (node, pool and resource names, decision results).

use std::fmt::Write;

use qm_runtime::metrics::{LATENCY_BUCKETS, Outcome, Snapshot};

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What a resource's amounts are measured in: (metric suffix, divisor to that unit).
fn unit(resource: &str) -> (&'static str, f64) {
    match resource {
        "cpu" => ("cores", 1000.0),
        "memory" | "ephemeral-storage" => ("bytes", 1.0),
        _ => ("count", 1.0),
    }
}

/// Renders `s` as Prometheus text.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
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
        "qm_pool_queued_requests",
        "gauge",
        "Requests waiting in a pool's queue.",
    );
    for (p, q, _) in &s.pools {
        let _ = writeln!(out, "qm_pool_queued_requests{{pool=\"{}\"}} {q}", label(p));
    }
    family(
        &mut out,
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
        "qm_store_transactions_total",
        "counter",
        "Transactions the store committed (each one fsync).",
    );
    let _ = writeln!(out, "qm_store_transactions_total {}", s.store_transactions);
    family(
        &mut out,
        "qm_store_batches_total",
        "counter",
        "Change batches the store committed; batches per transaction is the group-commit factor.",
    );
    let _ = writeln!(out, "qm_store_batches_total {}", s.store_batches);
    out
}

#[cfg(test)]
mod tests {
    use qm_runtime::metrics::{Counters, NodeAmounts};

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
        let text = render(&s);
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
