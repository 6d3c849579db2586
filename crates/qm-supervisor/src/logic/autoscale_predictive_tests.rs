//! Tests of the predictive autoscaler against the reactive one on the same load: a load
//! replayed once a second against a fleet whose replica count follows each decision at once.

use super::*;

const S: u64 = 1_000;
const T0: u64 = 1_700_000_000_000;

fn reactive() -> AutoscaleSpec {
    AutoscaleSpec::new(1, 50, Metric::Cpu, 0.6)
}

fn predictive(horizon_s: f64) -> AutoscaleSpec {
    AutoscaleSpec {
        predictive: Some(Predictive::new(horizon_s)),
        ..reactive()
    }
}

/// Replays `loads` (total load, one a second) from `start` replicas: the metric is the load
/// per replica. Returns every decision.
fn replay(spec: AutoscaleSpec, start: u32, loads: &[f64]) -> Vec<Decision> {
    let mut a = Autoscaler::new(spec);
    let mut current = start;
    let mut decisions = Vec::new();
    for (s, &load) in loads.iter().enumerate() {
        let d = a.recommend(T0 + s as u64 * S, current, Some(load / f64::from(current)));
        current = d.replicas;
        decisions.push(d);
    }
    decisions
}

/// Seconds until the first change of count.
fn first_change(decisions: &[Decision]) -> Option<usize> {
    decisions.iter().position(|d| d.changed)
}

/// A deterministic noise in [-1, 1] (xorshift).
fn noise(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[test]
fn off_by_default() {
    assert_eq!(
        AutoscaleSpec::new(1, 5, Metric::Custom, 3.0).predictive,
        None
    );
    let loads: Vec<f64> = (0..600).map(|s| 1.0 + 0.01 * s as f64).collect();
    let a = replay(reactive(), 2, &loads);
    assert!(a.iter().all(|d| !d.reason.contains("forecast")));
}

#[test]
fn a_steady_load_decides_as_reactive() {
    for load in [0.5, 1.2, 3.0, 7.7] {
        let loads = vec![load; 900];
        let r = replay(reactive(), 2, &loads);
        let p = replay(predictive(60.0), 2, &loads);
        assert_eq!(p, r, "load {load}");
    }
}

#[test]
fn a_ramp_scales_out_earlier() {
    // 1.2 (2 replicas at target) rising by 0.6 (one replica) every 100 s.
    let loads: Vec<f64> = (0..1200).map(|s| 1.2 + 0.006 * s as f64).collect();
    let r = replay(reactive(), 2, &loads);
    let p = replay(predictive(60.0), 2, &loads);
    // Once the trend is learnt, each count is reached about the horizon sooner.
    let reached = |d: &[Decision], n: u32| d.iter().position(|d| d.replicas >= n).unwrap();
    for n in 4..=11 {
        let (r_at, p_at) = (reached(&r, n), reached(&p, n));
        assert!(
            p_at + 45 <= r_at,
            "{n} replicas: predictive {p_at} s, reactive {r_at} s"
        );
    }
    let p_first = first_change(&p).unwrap();
    let first = &p[p_first];
    assert!(
        first.reason.starts_with("cpu ") && first.reason.contains("; forecast cpu load "),
        "{}",
        first.reason
    );
    assert!(first.reason.contains(" in 60 s"), "{}", first.reason);
    // Ahead all the way up.
    for (s, (r, p)) in r.iter().zip(&p).enumerate().skip(120) {
        assert!(
            p.replicas >= r.replicas,
            "at {s} s: {} < {}",
            p.replicas,
            r.replicas
        );
    }
}

#[test]
fn a_falling_load_does_not_scale_down_earlier() {
    // 6.0 (10 replicas at target) falling to 0.6 over 15 minutes.
    let loads: Vec<f64> = (0..1800)
        .map(|s| (6.0 - 0.006 * s as f64).max(0.6))
        .collect();
    let r = replay(reactive(), 10, &loads);
    let p = replay(predictive(60.0), 10, &loads);
    let down = |d: &[Decision]| d.iter().position(|d| d.changed && d.replicas < 10);
    let (r_down, p_down) = (down(&r).unwrap(), down(&p).unwrap());
    assert!(
        p_down >= r_down,
        "predictive {p_down} s, reactive {r_down} s"
    );
    for (s, (r, p)) in r.iter().zip(&p).enumerate() {
        assert!(
            p.replicas >= r.replicas,
            "at {s} s: {} < {}",
            p.replicas,
            r.replicas
        );
    }
}

#[test]
fn noise_does_not_make_it_flap() {
    let mut seed = 0x5eed_u64;
    // 3.0 (5 replicas at target) ± 5 %, for an hour.
    let loads: Vec<f64> = (0..3600)
        .map(|_| 3.0 * (1.0 + 0.05 * noise(&mut seed)))
        .collect();
    let p = replay(predictive(60.0), 5, &loads);
    let changes: Vec<&Decision> = p.iter().filter(|d| d.changed).collect();
    assert!(changes.is_empty(), "{changes:#?}");
}

#[test]
fn the_forecast_respects_max_and_rate_limits() {
    let spec = AutoscaleSpec {
        max: 6,
        ..predictive(120.0)
    };
    // A steep ramp: the forecast asks for far more than 6.
    let loads: Vec<f64> = (0..300).map(|s| 1.2 + 0.05 * s as f64).collect();
    let p = replay(spec, 2, &loads);
    assert!(p.iter().all(|d| d.replicas <= 6));
    let first = &p[first_change(&p).unwrap()];
    assert!(first.replicas <= 6, "{first:?}");
    // Within any 15 s a scale-up adds at most 4 replicas or 100 %.
    let p = replay(predictive(600.0), 2, &loads);
    assert!(p.iter().any(|d| d.reason.contains("by rate limit")));
    for s in 15..p.len() {
        let before = p[s - 15].replicas;
        let most = (before + 4).max(2 * before);
        assert!(p[s].replicas <= most, "at {s} s: {}", p[s].reason);
    }
}

#[test]
fn replicas_still_starting_are_not_asked_for_twice() {
    let mut a = Autoscaler::new(AutoscaleSpec {
        scale_up_limit: None,
        ..reactive()
    });
    // 2 replicas at 0.9 ask for 3; while the third starts, the 2 ready still read 0.9.
    assert_eq!(a.recommend_measured(T0, 2, 2, Some(0.9)).replicas, 3);
    let d = a.recommend_measured(T0 + S, 3, 2, Some(0.9));
    assert_eq!(
        d,
        Decision {
            replicas: 3,
            reason: "cpu 0.90 of target 0.60 on 2 ready: keeping 3 replicas".to_owned(),
            changed: false,
        }
    );
    // Counted over every replica, the same reading asks for 5.
    assert_eq!(a.recommend(T0 + 2 * S, 3, Some(0.9)).replicas, 5);
}

#[test]
fn the_forecast_keeps_to_the_band() {
    // Scale up only above 0.9 a replica: a ramp from 0.6 to 0.78 a replica is left alone.
    let spec = AutoscaleSpec {
        band: Some((0.3, 0.9)),
        ..predictive(60.0)
    };
    let loads: Vec<f64> = (0..600).map(|s| 3.0 + 0.0015 * s as f64).collect();
    let p = replay(spec, 5, &loads);
    assert!(
        p.iter().all(|d| !d.changed),
        "{:?}",
        p.iter().find(|d| d.changed)
    );
    // Without the band the same ramp is met ahead.
    let p = replay(predictive(60.0), 5, &loads);
    assert!(p.iter().any(|d| d.changed && d.reason.contains("forecast")));
}
