//! Unit tests of the alert engine with a fake clock (plain millisecond times): pending and
//! firing, hysteresis, de-duplication, absent series, per-label instances, validation and the
//! default rules.

use std::collections::BTreeMap;

use qm_sys::metric::{Desc, Kind, Sample};

use super::*;

static MEM: Desc = Desc {
    name: "qm_host_memory_used_ratio",
    help: "memory used",
    kind: Kind::Gauge,
};
static FS: Desc = Desc {
    name: "qm_host_filesystem_used_ratio",
    help: "filesystem used",
    kind: Kind::Gauge,
};
static FREE: Desc = Desc {
    name: "qm_host_memory_available_bytes",
    help: "memory available",
    kind: Kind::Gauge,
};

const S: u64 = 1_000;

fn rule(name: &str, series: &str, op: Op, threshold: f64, clear: Option<f64>, for_ms: u64) -> Rule {
    Rule {
        name: name.to_owned(),
        series: series.to_owned(),
        matchers: BTreeMap::new(),
        op,
        threshold,
        clear,
        for_ms,
        severity: Severity::Warning,
        labels: BTreeMap::new(),
        summary: Some("memory is high".to_owned()),
    }
}

fn mem_rule(for_ms: u64) -> Rule {
    rule("mem_high", MEM.name, Op::Gt, 0.9, Some(0.85), for_ms)
}

fn engine(rules: Vec<Rule>) -> AlertEngine {
    AlertEngine::new(rules).unwrap()
}

fn mem(v: f64) -> Vec<Sample> {
    vec![Sample::new(&MEM, v)]
}

/// `F rule fingerprint` / `R rule fingerprint`, one per transition.
fn kinds(ts: &[Transition]) -> Vec<String> {
    ts.iter()
        .map(|t| match t {
            Transition::Firing(a) => format!("F {}", a.fingerprint),
            Transition::Resolved(a) => format!("R {}", a.fingerprint),
        })
        .collect()
}

fn states(e: &AlertEngine) -> Vec<(String, AlertState)> {
    e.alerts()
        .into_iter()
        .map(|a| (a.fingerprint, a.state))
        .collect()
}

#[test]
fn pending_fires_after_for_and_not_before() {
    let mut e = engine(vec![mem_rule(10 * S)]);
    assert!(e.evaluate(0, &mem(0.5)).is_empty());
    assert!(e.alerts().is_empty());
    assert!(e.evaluate(S, &mem(0.95)).is_empty());
    assert_eq!(states(&e), [("mem_high{}".to_owned(), AlertState::Pending)]);
    assert!(e.evaluate(10 * S, &mem(0.96)).is_empty(), "9 s in");
    let t = e.evaluate(11 * S, &mem(0.97));
    assert_eq!(kinds(&t), ["F mem_high{}"]);
    let a = t[0].alert();
    assert_eq!(
        (a.pending_since, a.fired_at, a.value),
        (S, Some(11 * S), 0.97)
    );
    assert_eq!(a.expr, "qm_host_memory_used_ratio > 0.9");
    assert_eq!(a.summary.as_deref(), Some("memory is high"));
    assert!(e.evaluate(12 * S, &mem(0.97)).is_empty(), "no repeat");
    assert_eq!(states(&e), [("mem_high{}".to_owned(), AlertState::Firing)]);
}

#[test]
fn flapping_inside_the_clear_band_does_not_refire() {
    let mut e = engine(vec![mem_rule(0)]);
    let mut all = Vec::new();
    for (i, v) in [0.91, 0.88, 0.92, 0.86, 0.95, 0.851, 0.93]
        .iter()
        .enumerate()
    {
        all.extend(e.evaluate(i as u64 * S, &mem(*v)));
    }
    assert_eq!(kinds(&all), ["F mem_high{}"]);
    assert_eq!(e.alerts()[0].value, 0.93);
    // At the clear threshold it still holds (> 0.85 is false at 0.85: resolves).
    let t = e.evaluate(10 * S, &mem(0.85));
    assert_eq!(kinds(&t), ["R mem_high{}"]);
    assert_eq!(t[0].alert().resolved_at, Some(10 * S));
    assert_eq!(t[0].alert().note, None);
}

#[test]
fn one_firing_and_one_resolved_per_episode() {
    let mut e = engine(vec![mem_rule(2 * S)]);
    let feed = [
        0.5, 0.95, 0.95, 0.95, 0.95, 0.8, 0.8, 0.5, 0.99, 0.99, 0.99, 0.99, 0.1,
    ];
    let mut all = Vec::new();
    for (i, v) in feed.iter().enumerate() {
        all.extend(e.evaluate(i as u64 * S, &mem(*v)));
    }
    assert_eq!(
        kinds(&all),
        [
            "F mem_high{}",
            "R mem_high{}",
            "F mem_high{}",
            "R mem_high{}"
        ]
    );
    let fired: Vec<_> = all.iter().filter_map(|t| t.alert().fired_at).collect();
    assert_eq!(fired, [3 * S, 3 * S, 10 * S, 10 * S]);
    // Both episodes are in the recently resolved list, newest first.
    let recent: Vec<_> = e.alerts().iter().map(|a| a.resolved_at).collect();
    assert_eq!(recent, [Some(12 * S), Some(5 * S)]);
}

#[test]
fn resolves_only_below_clear() {
    let mut e = engine(vec![mem_rule(0)]);
    assert_eq!(kinds(&e.evaluate(0, &mem(0.95))), ["F mem_high{}"]);
    assert!(
        e.evaluate(S, &mem(0.9)).is_empty(),
        "at the threshold, above clear"
    );
    assert!(e.evaluate(2 * S, &mem(0.86)).is_empty());
    assert_eq!(kinds(&e.evaluate(3 * S, &mem(0.84))), ["R mem_high{}"]);
    assert!(e.evaluate(4 * S, &mem(0.84)).is_empty());
    assert_eq!(
        states(&e),
        [("mem_high{}".to_owned(), AlertState::Resolved)]
    );
}

#[test]
fn absent_series_resolves_firing_and_drops_pending() {
    let agent_rule = rule("agent_mem", FREE.name, Op::Lt, 100.0, None, 0);
    let slow = rule("agent_mem_slow", FREE.name, Op::Lt, 100.0, None, 60 * S);
    let mut e = engine(vec![agent_rule, slow]);
    let s = |id: &str, v: f64| Sample::with_label(&FREE, "agent", id, v);
    let t = e.evaluate(0, &[s("a", 10.0), s("b", 500.0)]);
    assert_eq!(kinds(&t), [r#"F agent_mem{agent="a"}"#]);
    assert_eq!(e.alerts().len(), 2, "one firing, one pending");
    let t = e.evaluate(S, &[s("b", 500.0)]);
    assert_eq!(kinds(&t), [r#"R agent_mem{agent="a"}"#]);
    assert_eq!(t[0].alert().note.as_deref(), Some(SERIES_ABSENT));
    assert_eq!(
        states(&e),
        [(r#"agent_mem{agent="a"}"#.to_owned(), AlertState::Resolved)],
        "the pending one was dropped"
    );
    assert!(e.evaluate(2 * S, &[]).is_empty());
}

#[test]
fn each_label_set_is_its_own_instance() {
    let mut r = rule("fs_full", FS.name, Op::Gt, 0.9, Some(0.88), 0);
    r.labels.insert("team".to_owned(), "infra".to_owned());
    r.labels
        .insert("mountpoint".to_owned(), "overridden".to_owned());
    let mut e = engine(vec![r]);
    let fs = |m: &str, v: f64| Sample::with_label(&FS, "mountpoint", m, v);
    let t = e.evaluate(0, &[fs("/", 0.5), fs("/data", 0.95)]);
    assert_eq!(kinds(&t), [r#"F fs_full{mountpoint="/data"}"#]);
    let labels = &t[0].alert().labels;
    assert_eq!(labels.get("team").map(String::as_str), Some("infra"));
    assert_eq!(
        labels.get("mountpoint").map(String::as_str),
        Some("overridden"),
        "the rule's labels win"
    );
    let t = e.evaluate(S, &[fs("/", 0.97), fs("/data", 0.95)]);
    assert_eq!(kinds(&t), [r#"F fs_full{mountpoint="/"}"#]);
    assert_eq!(e.alerts().len(), 2);
}

#[test]
fn matchers_pick_samples() {
    let mut r = rule("fs_root", FS.name, Op::Ge, 0.5, None, 0);
    r.matchers.insert("mountpoint".to_owned(), "/".to_owned());
    let mut e = engine(vec![r]);
    let fs = |m: &str, v: f64| Sample::with_label(&FS, "mountpoint", m, v);
    let t = e.evaluate(0, &[fs("/data", 0.9), fs("/", 0.5)]);
    assert_eq!(kinds(&t), [r#"F fs_root{mountpoint="/"}"#]);
    assert_eq!(
        t[0].alert().expr,
        r#"qm_host_filesystem_used_ratio{mountpoint="/"} >= 0.5"#
    );
}

#[test]
fn pending_that_recovers_gives_nothing() {
    let mut e = engine(vec![mem_rule(5 * S)]);
    let mut all = Vec::new();
    for (i, v) in [0.95, 0.95, 0.5, 0.95, 0.95, 0.95, 0.95, 0.5]
        .iter()
        .enumerate()
    {
        all.extend(e.evaluate(i as u64 * S, &mem(*v)));
    }
    assert!(all.is_empty(), "{all:?}");
    assert!(e.alerts().is_empty());
}

#[test]
fn for_zero_fires_at_once_and_nan_changes_nothing() {
    let mut e = engine(vec![mem_rule(0)]);
    assert!(e.evaluate(0, &mem(f64::NAN)).is_empty());
    assert!(e.alerts().is_empty());
    assert_eq!(kinds(&e.evaluate(S, &mem(0.99))), ["F mem_high{}"]);
    assert!(
        e.evaluate(2 * S, &mem(f64::NAN)).is_empty(),
        "NaN: still firing"
    );
    assert_eq!(e.alerts()[0].state, AlertState::Firing);
    assert_eq!(e.alerts()[0].value, 0.99);
    // NaN in pending does not reset the clock either.
    let mut e = engine(vec![mem_rule(2 * S)]);
    e.evaluate(0, &mem(0.95));
    e.evaluate(S, &mem(f64::NAN));
    assert_eq!(kinds(&e.evaluate(2 * S, &mem(0.95))), ["F mem_high{}"]);
}

#[test]
fn lower_bound_rules_use_their_clear() {
    let r = rule("mem_low", FREE.name, Op::Lt, 100.0, Some(150.0), 0);
    let mut e = engine(vec![r]);
    let free = |v: f64| vec![Sample::new(&FREE, v)];
    assert_eq!(kinds(&e.evaluate(0, &free(50.0))), ["F mem_low{}"]);
    assert!(e.evaluate(S, &free(120.0)).is_empty());
    assert_eq!(kinds(&e.evaluate(2 * S, &free(150.0))), ["R mem_low{}"]);
}

#[test]
fn alerts_order_firing_then_pending_then_resolved() {
    let mut crit = rule("b_crit", MEM.name, Op::Gt, 0.5, None, 0);
    crit.severity = Severity::Critical;
    let mut e = engine(vec![
        rule("a_pending", MEM.name, Op::Gt, 0.5, None, 60 * S),
        rule("c_warn", MEM.name, Op::Gt, 0.5, None, 0),
        crit,
        rule("d_gone", MEM.name, Op::Gt, 0.95, None, 0),
    ]);
    e.evaluate(0, &mem(0.99));
    e.evaluate(S, &mem(0.9));
    let order: Vec<_> = e
        .alerts()
        .into_iter()
        .map(|a| format!("{} {}", a.rule, a.state))
        .collect();
    assert_eq!(
        order,
        [
            "b_crit firing",
            "c_warn firing",
            "a_pending pending",
            "d_gone resolved"
        ]
    );
}

#[test]
fn resolved_list_is_bounded() {
    let mut e = engine(vec![mem_rule(0)]);
    for i in 0..(RESOLVED_KEPT as u64 + 20) {
        e.evaluate(2 * i * S, &mem(0.99));
        e.evaluate((2 * i + 1) * S, &mem(0.1));
    }
    let a = e.alerts();
    assert_eq!(a.len(), RESOLVED_KEPT);
    assert_eq!(
        a[0].resolved_at,
        Some((2 * (RESOLVED_KEPT as u64 + 19) + 1) * S)
    );
}

#[test]
fn invalid_rules_name_their_fields() {
    let mut r = rule("bad name!", "", Op::Gt, f64::NAN, Some(f64::INFINITY), 0);
    r.labels.insert(String::new(), "x".to_owned());
    let fields: Vec<String> = r.validate().into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["name", "series", "labels", "threshold", "clear"]);

    let above = rule("x", MEM.name, Op::Gt, 0.9, Some(0.95), 0);
    assert_eq!(
        above.validate(),
        [(
            "clear".to_owned(),
            "0.95 must be at most the threshold (0.9) for >".to_owned()
        )]
    );
    let below = rule("x", MEM.name, Op::Le, 0.2, Some(0.1), 0);
    assert_eq!(
        below.validate(),
        [(
            "clear".to_owned(),
            "0.1 must be at least the threshold (0.2) for <=".to_owned()
        )]
    );
    assert!(
        rule("x", "9bad", Op::Gt, 1.0, None, 0).validate()[0]
            .1
            .contains("not a metric name")
    );

    let err = AlertEngine::new(vec![mem_rule(0), mem_rule(5), above])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "rules[1].name: \"mem_high\" is already the name of rules[0]; \
         rules[2].clear: 0.95 must be at most the threshold (0.9) for >"
    );
}

#[test]
fn ops_and_severities_parse_and_print() {
    for (s, op) in [
        (">", Op::Gt),
        ("gt", Op::Gt),
        (">=", Op::Ge),
        ("ge", Op::Ge),
        ("<", Op::Lt),
        ("lt", Op::Lt),
        ("<=", Op::Le),
        ("le", Op::Le),
    ] {
        assert_eq!(s.parse::<Op>(), Ok(op));
        assert_eq!(op.to_string().parse::<Op>(), Ok(op));
    }
    assert_eq!(
        "=>".parse::<Op>().unwrap_err().to_string(),
        "\"=>\" is not an operator: use >, >=, <, <= (or gt, ge, lt, le)"
    );
    for s in ["info", "warning", "critical"] {
        assert_eq!(s.parse::<Severity>().unwrap().to_string(), s);
    }
    assert_eq!(
        "page".parse::<Severity>().unwrap_err().to_string(),
        "\"page\" is not a severity: use info, warning or critical"
    );
    assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
    assert_eq!(AlertState::Firing.to_string(), "firing");
}

#[test]
fn default_rules_validate() {
    let rules = default_rules();
    for r in &rules {
        assert_eq!(r.validate(), [], "{}", r.name);
        assert!(r.summary.is_some(), "{}", r.name);
    }
    let e = engine(rules);
    let exprs: Vec<String> = e.rules().iter().map(Rule::expr).collect();
    assert_eq!(
        exprs,
        [
            "qm_host_memory_used_ratio > 0.9",
            "qm_host_memory_used_ratio > 0.97",
            "qm_host_filesystem_used_ratio > 0.9",
            "qm_host_cpu_utilization_ratio > 0.95",
            r#"qm_host_pressure_ratio{kind="some",resource="memory",window="10s"} > 0.1"#,
            r#"qm_pressure_level{signal="memory"} > 0.5"#,
            "qm_host_fds_used_ratio > 0.9",
        ]
    );
}

#[test]
fn default_memory_rules_escalate() {
    let mut e = engine(default_rules());
    let mut fired = Vec::new();
    for i in 0..=60 {
        for t in e.evaluate(i * S, &mem(0.98)) {
            fired.push((t.alert().rule.clone(), t.alert().fired_at));
        }
    }
    assert_eq!(
        fired,
        [
            ("host_memory_critical".to_owned(), Some(15 * S)),
            ("host_memory_high".to_owned(), Some(60 * S)),
        ]
    );
}
