//! Tests of the autoscaler with a fake clock, using the arithmetic of the Kubernetes HPA
//! documentation.

use super::*;

const S: u64 = 1_000;
const T0: u64 = 1_700_000_000_000;

fn cpu(min: u32, max: u32, target: f64) -> AutoscaleSpec {
    AutoscaleSpec::new(min, max, Metric::Cpu, target)
}

/// A spec without stabilization windows or rate limits, to see the raw arithmetic.
fn bare(min: u32, max: u32, target: f64) -> AutoscaleSpec {
    AutoscaleSpec {
        scale_down_stabilization_ms: 0,
        scale_up_limit: None,
        scale_down_limit: None,
        ..cpu(min, max, target)
    }
}

fn decision(replicas: u32, reason: &str, changed: bool) -> Decision {
    Decision {
        replicas,
        reason: reason.to_owned(),
        changed,
    }
}

#[test]
fn hpa_docs_arithmetic() {
    let mut a = Autoscaler::new(cpu(1, 10, 0.6));
    assert_eq!(
        a.recommend(T0, 3, Some(0.9)),
        decision(5, "cpu 0.90 of target 0.60: 3 → 5", true)
    );
    let mut a = Autoscaler::new(bare(1, 10, 0.5));
    // The docs' other example: 200m used of a 100m target on 1 replica doubles it.
    assert_eq!(a.recommend(T0, 1, Some(1.0)).replicas, 2);
    assert_eq!(a.recommend(T0 + S, 4, Some(0.25)).replicas, 2);
}

#[test]
fn floating_point_error_does_not_add_a_replica() {
    // 2 × 0.9 / 0.6 is 3.0000000000000004 in f64.
    let mut a = Autoscaler::new(bare(1, 10, 0.6));
    assert_eq!(a.recommend(T0, 2, Some(0.9)).replicas, 3);
}

#[test]
fn within_tolerance_keeps_the_count() {
    let mut a = Autoscaler::new(cpu(1, 10, 0.6));
    assert_eq!(
        a.recommend(T0, 3, Some(0.62)),
        decision(
            3,
            "cpu 0.62 of target 0.60: within tolerance (±10%), keeping 3 replicas",
            false
        )
    );
    // The edges of ±10 % are within.
    assert!(!a.recommend(T0, 3, Some(0.66)).changed);
    assert!(!a.recommend(T0, 3, Some(0.54)).changed);
    assert_eq!(
        a.recommend(T0, 3, Some(0.67)),
        decision(4, "cpu 0.67 of target 0.60: 3 → 4", true)
    );
}

#[test]
fn scale_down_stabilization_holds_the_max_of_five_minutes() {
    let mut a = Autoscaler::new(cpu(1, 10, 0.6));
    assert!(!a.recommend(T0, 5, Some(0.6)).changed);
    assert_eq!(a.recommend(T0 + 100 * S, 5, Some(0.48)).replicas, 5);
    assert_eq!(
        a.recommend(T0 + 200 * S, 5, Some(0.2)),
        decision(
            5,
            "cpu 0.20 of target 0.60 wants 2; scale-down held by stabilization window \
             (max 5 in last 300 s): keeping 5 replicas",
            false
        )
    );
    // At 300 s the first recommendation (5) has left the window; 4 (at 100 s) is the max.
    assert_eq!(
        a.recommend(T0 + 300 * S, 5, Some(0.2)),
        decision(
            4,
            "cpu 0.20 of target 0.60 wants 2; scale-down held by stabilization window \
             (max 4 in last 300 s): 5 → 4",
            true
        )
    );
    assert_eq!(
        a.recommend(T0 + 400 * S, 4, Some(0.2)),
        decision(2, "cpu 0.20 of target 0.60: 4 → 2", true)
    );
}

#[test]
fn a_fresh_autoscaler_does_not_scale_down_before_the_window() {
    let mut a = Autoscaler::new(cpu(1, 10, 0.6));
    assert_eq!(a.recommend(T0, 5, Some(0.1)).replicas, 5);
    assert_eq!(a.recommend(T0 + 299 * S, 5, Some(0.1)).replicas, 5);
    assert_eq!(a.recommend(T0 + 300 * S, 5, Some(0.1)).replicas, 1);
}

#[test]
fn scale_up_stabilization_holds_the_min() {
    let spec = AutoscaleSpec {
        scale_up_stabilization_ms: 60 * S,
        ..bare(1, 10, 0.6)
    };
    let mut a = Autoscaler::new(spec);
    assert!(!a.recommend(T0, 3, Some(0.6)).changed);
    assert_eq!(
        a.recommend(T0 + 30 * S, 3, Some(0.9)),
        decision(
            3,
            "cpu 0.90 of target 0.60 wants 5; scale-up held by stabilization window \
             (min 3 in last 60 s): keeping 3 replicas",
            false
        )
    );
    assert_eq!(a.recommend(T0 + 60 * S, 3, Some(0.9)).replicas, 5);
}

#[test]
fn scale_up_limit_four_replicas_then_one_hundred_percent() {
    let mut a = Autoscaler::new(cpu(1, 20, 0.5));
    assert_eq!(
        a.recommend(T0, 1, Some(10.0)),
        decision(
            5,
            "cpu 10.00 of target 0.50 wants 20; scale-up limited to 5 by rate limit \
             (4 replicas or 100% per 15 s): 1 → 5",
            true
        )
    );
    // Within the same 15 s the period still starts at 1 replica.
    assert_eq!(a.recommend(T0 + 5 * S, 5, Some(2.0)).replicas, 5);
    // A new period starts at 5: 100 % (10) beats 4 replicas (9).
    assert_eq!(a.recommend(T0 + 15 * S, 5, Some(2.0)).replicas, 10);
    assert_eq!(a.recommend(T0 + 30 * S, 10, Some(1.0)).replicas, 20);
}

#[test]
fn scale_down_limit_counts_from_the_period_start() {
    let spec = AutoscaleSpec {
        scale_down_limit: Some(RateLimit {
            pods: Some(1),
            percent: None,
            period_ms: 60 * S,
        }),
        ..bare(1, 10, 0.6)
    };
    let mut a = Autoscaler::new(spec);
    assert_eq!(a.recommend(T0, 5, Some(0.1)).replicas, 4);
    assert_eq!(
        a.recommend(T0 + 30 * S, 4, Some(0.1)),
        decision(
            4,
            "cpu 0.10 of target 0.60 wants 1; scale-down limited to 4 by rate limit \
             (1 replica per 60 s): keeping 4 replicas",
            false
        )
    );
    assert_eq!(a.recommend(T0 + 60 * S, 4, Some(0.1)).replicas, 3);
}

#[test]
fn min_and_max_clamp() {
    let mut a = Autoscaler::new(bare(2, 6, 0.3));
    assert_eq!(
        a.recommend(T0, 4, Some(0.9)),
        decision(
            6,
            "cpu 0.90 of target 0.30 wants 12; capped at max 6: 4 → 6",
            true
        )
    );
    assert_eq!(
        a.recommend(T0, 6, Some(0.9)),
        decision(
            6,
            "cpu 0.90 of target 0.30 wants 18; capped at max 6: keeping 6 replicas",
            false
        )
    );
    assert_eq!(
        a.recommend(T0, 4, Some(0.01)),
        decision(
            2,
            "cpu 0.01 of target 0.30 wants 1; raised to min 2: 4 → 2",
            true
        )
    );
    // A count outside the bounds is brought back at once, even without a metric.
    assert_eq!(
        a.recommend(T0, 8, None),
        decision(6, "8 replicas is above the maximum 6: 8 → 6", true)
    );
    assert_eq!(
        a.recommend(T0, 1, None),
        decision(2, "1 replica is below the minimum 2: 1 → 2", true)
    );
}

#[test]
fn band_between_low_and_high_never_scales() {
    let spec = AutoscaleSpec {
        band: Some((0.4, 0.8)),
        ..bare(1, 10, 0.6)
    };
    let mut a = Autoscaler::new(spec);
    for value in [0.4, 0.45, 0.5, 0.6, 0.7, 0.75, 0.8] {
        assert!(!a.recommend(T0, 4, Some(value)).changed, "{value}");
    }
    assert_eq!(
        a.recommend(T0, 4, Some(0.75)).reason,
        "cpu 0.75 of target 0.60: within band 0.40 to 0.80, keeping 4 replicas"
    );
    // Beyond the band, to what the target asks.
    assert_eq!(a.recommend(T0, 4, Some(0.9)).replicas, 6);
    assert_eq!(a.recommend(T0, 4, Some(0.3)).replicas, 2);
}

#[test]
fn missing_or_unusable_metric_keeps_the_count() {
    let mut a = Autoscaler::new(cpu(1, 10, 0.6));
    assert_eq!(
        a.recommend(T0, 3, None),
        decision(3, "no cpu value: keeping 3 replicas", false)
    );
    for value in [f64::NAN, f64::INFINITY, -1.0] {
        let d = a.recommend(T0, 3, Some(value));
        assert_eq!((d.replicas, d.changed), (3, false), "{value}");
        assert!(d.reason.contains("is not usable"), "{}", d.reason);
    }
}

#[test]
fn zero_replicas_wake_on_load_and_idle_fleets_scale_to_zero() {
    let spec = AutoscaleSpec::new(0, 5, Metric::Custom, 10.0);
    let mut a = Autoscaler::new(spec);
    assert!(!a.recommend(T0, 0, None).changed);
    assert_eq!(
        a.recommend(T0, 0, Some(0.0)),
        decision(0, "custom 0.00 of target 10.00: keeping 0 replicas", false)
    );
    assert_eq!(
        a.recommend(T0 + S, 0, Some(25.0)),
        decision(1, "custom 25.00 of target 10.00: 0 → 1", true)
    );
    // With min above zero, zero replicas go to min.
    let mut a = Autoscaler::new(AutoscaleSpec::new(2, 5, Metric::Custom, 10.0));
    assert_eq!(a.recommend(T0, 0, Some(25.0)).replicas, 2);
    // Idle for the whole window: down to zero.
    let mut a = Autoscaler::new(AutoscaleSpec::new(0, 5, Metric::Memory, 0.5));
    assert_eq!(a.recommend(T0, 2, Some(0.0)).replicas, 2);
    assert_eq!(
        a.recommend(T0 + 300 * S, 2, Some(0.0)),
        decision(0, "memory 0.00 of target 0.50: 2 → 0", true)
    );
}

#[test]
fn rate_limit_arithmetic() {
    let up = RateLimit::hpa_scale_up();
    assert_eq!([up.up_to(0), up.up_to(1), up.up_to(5)], [4, 5, 10]);
    let percent_only = RateLimit {
        pods: None,
        percent: Some(10),
        period_ms: 15_000,
    };
    // A percentage always allows one more replica, even from zero.
    assert_eq!(
        [
            percent_only.up_to(0),
            percent_only.up_to(3),
            percent_only.up_to(20)
        ],
        [1, 4, 22]
    );
    assert_eq!(percent_only.down_to(20), 18);
    assert_eq!(percent_only.down_to(5), 4);
    let down = RateLimit::hpa_scale_down();
    assert_eq!(down.down_to(7), 0);
    let both = RateLimit {
        pods: Some(2),
        percent: Some(50),
        period_ms: 60_000,
    };
    assert_eq!([both.down_to(10), both.up_to(10)], [5, 15]);
    assert_eq!(up.to_string(), "4 replicas or 100% per 15 s");
    assert_eq!(both.to_string(), "2 replicas or 50% per 60 s");
}

#[test]
fn history_is_forgotten() {
    let mut a = Autoscaler::new(cpu(1, 10, 0.6));
    for i in 0..1_000 {
        a.recommend(T0 + i * 10 * S, 3, Some(0.6));
    }
    assert!(a.history.len() <= 31, "{}", a.history.len());
}

#[test]
fn metric_round_trips() {
    for m in [Metric::Cpu, Metric::Memory, Metric::Custom] {
        assert_eq!(m.to_string().parse::<Metric>(), Ok(m));
    }
    assert_eq!(
        "gpu"
            .parse::<Metric>()
            .expect_err("not a metric")
            .to_string(),
        "\"gpu\" is not an autoscaling metric: use cpu, memory or custom"
    );
}

#[test]
fn validate_names_fields() {
    assert!(cpu(0, 1, 0.6).validate().is_empty());
    let fields = |spec: AutoscaleSpec| -> Vec<String> {
        spec.validate().into_iter().map(|(f, _)| f).collect()
    };
    assert_eq!(fields(cpu(3, 2, 0.6)), ["min"]);
    assert_eq!(fields(cpu(0, 0, 0.6)), ["max"]);
    assert_eq!(fields(cpu(1, 10_001, 0.6)), ["max"]);
    for target in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(fields(cpu(1, 2, target)), ["target"], "{target}");
    }
    for tolerance in [-0.1, 1.0, f64::NAN] {
        let spec = AutoscaleSpec {
            tolerance,
            ..cpu(1, 2, 0.6)
        };
        assert_eq!(fields(spec), ["tolerance"], "{tolerance}");
    }
    for band in [
        (0.6, 0.8),
        (0.4, 0.6),
        (0.8, 0.4),
        (-0.1, 0.8),
        (0.4, f64::NAN),
    ] {
        let spec = AutoscaleSpec {
            band: Some(band),
            ..cpu(1, 2, 0.6)
        };
        assert_eq!(fields(spec), ["band"], "{band:?}");
    }
    let spec = AutoscaleSpec {
        scale_up_stabilization_ms: 3_600_001,
        scale_down_stabilization_ms: 7_200_000,
        scale_up_limit: Some(RateLimit {
            pods: Some(0),
            percent: Some(0),
            period_ms: 0,
        }),
        scale_down_limit: Some(RateLimit {
            pods: None,
            percent: Some(101),
            period_ms: 3_600_001,
        }),
        ..cpu(1, 2, 0.6)
    };
    assert_eq!(
        fields(spec),
        [
            "scale_up_stabilization_ms",
            "scale_down_stabilization_ms",
            "scale_up_limit.pods",
            "scale_up_limit.percent",
            "scale_up_limit.period_ms",
            "scale_down_limit.percent",
            "scale_down_limit.period_ms",
        ]
    );
    let empty = AutoscaleSpec {
        scale_down_limit: Some(RateLimit {
            pods: None,
            percent: None,
            period_ms: 15_000,
        }),
        ..cpu(1, 2, 0.6)
    };
    assert_eq!(
        empty.validate(),
        [(
            "scale_down_limit".to_owned(),
            "must set pods or percent (leave the limit unset for none)".to_owned()
        )]
    );
}
