//! Tests of health checking with a fake clock: thresholds, recovery, scheduling, heartbeats.

use super::*;

const S: u64 = 1_000;
const T0: u64 = 1_700_000_000_000;

fn http() -> HealthSpec {
    HealthSpec::new(HealthKind::Http {
        url: "http://127.0.0.1:9000/health".to_owned(),
    })
}

/// Checking for an agent that started at `at`.
fn started(spec: HealthSpec, at: u64) -> HealthState {
    let mut h = HealthState::new(spec);
    h.started(at);
    h
}

fn failed(reason: &str) -> ProbeResult {
    ProbeResult::Failed(reason.to_owned())
}

/// Runs one probe at `now` with `result`.
fn probe(h: &mut HealthState, now: u64, result: ProbeResult) -> Option<Transition> {
    assert!(h.due(now), "a probe should be due at {}", now - T0);
    h.probe_started(now);
    h.record(now + 10, result)
}

#[test]
fn unhealthy_after_threshold_consecutive_failures() {
    let mut h = started(http(), T0);
    assert_eq!(h.status(), &Health::Unknown);
    assert_eq!(probe(&mut h, T0, failed("connection refused")), None);
    assert_eq!(
        probe(&mut h, T0 + 10 * S, failed("connection refused")),
        None
    );
    assert_eq!(h.status(), &Health::Unknown);
    assert_eq!(h.consecutive_failures(), 2);
    assert_eq!(
        probe(&mut h, T0 + 20 * S, failed("http 503")),
        Some(Transition::BecameUnhealthy {
            reason: "http 503".to_owned(),
            consecutive_failures: 3
        })
    );
    assert_eq!(
        h.status(),
        &Health::Unhealthy {
            reason: "http 503".to_owned()
        }
    );
    assert_eq!(h.status().to_string(), "unhealthy: http 503");
    // Further failures are no new transition but keep the latest reason.
    assert_eq!(probe(&mut h, T0 + 30 * S, failed("http 500")), None);
    assert_eq!(h.consecutive_failures(), 4);
    assert_eq!(h.status().to_string(), "unhealthy: http 500");
}

#[test]
fn a_success_resets_the_count_and_recovers() {
    let mut h = started(http(), T0);
    assert_eq!(
        probe(&mut h, T0, ProbeResult::Ok),
        Some(Transition::BecameHealthy)
    );
    assert_eq!(probe(&mut h, T0 + 10 * S, ProbeResult::Ok), None);
    probe(&mut h, T0 + 20 * S, failed("x"));
    probe(&mut h, T0 + 30 * S, failed("x"));
    // A success between failures starts the count again.
    probe(&mut h, T0 + 40 * S, ProbeResult::Ok);
    probe(&mut h, T0 + 50 * S, failed("x"));
    probe(&mut h, T0 + 60 * S, failed("x"));
    assert_eq!(h.status(), &Health::Healthy);
    assert!(matches!(
        probe(&mut h, T0 + 70 * S, failed("x")),
        Some(Transition::BecameUnhealthy {
            consecutive_failures: 3,
            ..
        })
    ));
    // One success is enough to recover.
    assert_eq!(
        probe(&mut h, T0 + 80 * S, ProbeResult::Ok),
        Some(Transition::BecameHealthy)
    );
    assert_eq!(h.status(), &Health::Healthy);
    assert_eq!(h.consecutive_failures(), 0);
}

#[test]
fn due_schedules_one_probe_per_period() {
    let mut h = started(http(), T0);
    assert!(h.due(T0));
    h.probe_started(T0);
    // Never two at once, even when the next period comes.
    assert!(!h.due(T0 + 500));
    assert!(!h.due(T0 + 10 * S));
    assert_eq!(h.probe_deadline(), Some(T0 + S));
    assert_eq!(h.next_deadline(), Some(T0 + S));
    h.record(T0 + 300, ProbeResult::Ok);
    assert_eq!(h.probe_deadline(), None);
    assert!(!h.due(T0 + 300));
    assert!(!h.due(T0 + 10 * S - 1));
    assert_eq!(h.next_deadline(), Some(T0 + 10 * S));
    // A probe started late does not shift the schedule.
    assert!(h.due(T0 + 10 * S + 700));
    h.probe_started(T0 + 10 * S + 700);
    h.record(T0 + 10 * S + 900, ProbeResult::Ok);
    assert!(!h.due(T0 + 20 * S - 1));
    assert!(h.due(T0 + 20 * S));
    // Missed periods are skipped, not replayed.
    h.probe_started(T0 + 55 * S);
    h.record(T0 + 55 * S, ProbeResult::Ok);
    assert!(!h.due(T0 + 60 * S - 1));
    assert!(h.due(T0 + 60 * S));
}

#[test]
fn initial_delay_postpones_the_first_probe() {
    let spec = HealthSpec {
        initial_delay_ms: 30 * S,
        ..http()
    };
    let mut h = started(spec, T0);
    assert!(!h.due(T0));
    assert!(!h.due(T0 + 30 * S - 1));
    assert_eq!(h.next_deadline(), Some(T0 + 30 * S));
    assert!(h.due(T0 + 30 * S));
    h.probe_started(T0 + 30 * S);
    h.record(T0 + 30 * S, ProbeResult::Ok);
    assert!(h.due(T0 + 40 * S));
}

#[test]
fn a_timeout_counts_as_a_failure() {
    let spec = HealthSpec {
        kind: HealthKind::Exec {
            argv: vec!["./check.sh".to_owned()],
        },
        failure_threshold: 2,
        ..http()
    };
    let mut h = started(spec, T0);
    assert_eq!(probe(&mut h, T0, ProbeResult::TimedOut), None);
    assert_eq!(
        probe(&mut h, T0 + 10 * S, ProbeResult::TimedOut),
        Some(Transition::BecameUnhealthy {
            reason: "probe timed out after 1000 ms".to_owned(),
            consecutive_failures: 2
        })
    );
}

#[test]
fn heartbeat_deadline() {
    let spec = HealthSpec::new(HealthKind::Heartbeat { every_ms: 5 * S });
    let mut h = started(spec, T0);
    // No probes for heartbeats.
    assert!(!h.due(T0 + 60 * S));
    assert_eq!(h.heartbeat(T0 + S), Some(Transition::BecameHealthy));
    assert_eq!(h.heartbeat(T0 + 4 * S), None);
    // Deadline: 3 × 5 s after the last beat.
    assert_eq!(h.next_deadline(), Some(T0 + 19 * S + 1));
    assert_eq!(h.check(T0 + 19 * S), None);
    assert_eq!(h.status(), &Health::Healthy);
    assert_eq!(
        h.check(T0 + 19 * S + 1),
        Some(Transition::BecameUnhealthy {
            reason: "no heartbeat for 15 s (expected every 5 s)".to_owned(),
            consecutive_failures: 3
        })
    );
    assert_eq!(h.check(T0 + 40 * S), None);
    assert_eq!(h.consecutive_failures(), 7);
    // Healthy again on the next beat.
    assert_eq!(h.heartbeat(T0 + 41 * S), Some(Transition::BecameHealthy));
    assert_eq!(h.check(T0 + 42 * S), None);
    assert_eq!(h.consecutive_failures(), 0);
}

#[test]
fn heartbeat_never_sent_fails_after_initial_delay_and_deadline() {
    let spec = HealthSpec {
        initial_delay_ms: 10 * S,
        failure_threshold: 2,
        ..HealthSpec::new(HealthKind::Heartbeat { every_ms: 5 * S })
    };
    let mut h = started(spec, T0);
    assert_eq!(h.check(T0 + 20 * S), None);
    assert_eq!(h.status(), &Health::Unknown);
    assert_eq!(
        h.check(T0 + 20 * S + 1),
        Some(Transition::BecameUnhealthy {
            reason: "no heartbeat since the start 20 s ago (expected every 5 s)".to_owned(),
            consecutive_failures: 2
        })
    );
}

#[test]
fn heartbeats_do_not_judge_probe_checks() {
    let mut h = started(http(), T0);
    assert_eq!(h.heartbeat(T0), None);
    assert_eq!(h.check(T0 + 3_600 * S), None);
    assert_eq!(h.status(), &Health::Unknown);
}

#[test]
fn nothing_is_due_before_the_start() {
    let h = HealthState::new(http());
    assert!(!h.due(T0));
    assert_eq!(h.next_deadline(), None);
    let mut beats = HealthState::new(HealthSpec::new(HealthKind::Heartbeat { every_ms: S }));
    assert_eq!(beats.check(T0 + 3_600 * S), None);
    assert_eq!(beats.status(), &Health::Unknown);
}

#[test]
fn each_run_starts_afresh() {
    let spec = HealthSpec {
        initial_delay_ms: 5 * S,
        ..http()
    };
    let mut h = started(spec, T0);
    for i in 0..3 {
        probe(
            &mut h,
            T0 + 5 * S + i * 10 * S,
            failed("connection refused"),
        );
    }
    assert!(matches!(h.status(), Health::Unhealthy { .. }));
    h.probe_started(T0 + 35 * S);
    // The agent restarts: the old run's probe no longer counts as running, the verdict is
    // unknown again, and the schedule (initial delay included) starts from the new run.
    h.started(T0 + 100 * S);
    assert_eq!(h.status(), &Health::Unknown);
    assert_eq!(h.consecutive_failures(), 0);
    assert_eq!(h.probe_deadline(), None);
    assert!(!h.due(T0 + 104 * S));
    assert!(h.due(T0 + 105 * S));
}

#[test]
fn validate_names_fields() {
    assert!(http().validate().is_empty());
    assert!(
        HealthSpec::new(HealthKind::Heartbeat { every_ms: 1 })
            .validate()
            .is_empty()
    );
    let fields =
        |spec: HealthSpec| -> Vec<String> { spec.validate().into_iter().map(|(f, _)| f).collect() };
    for url in ["https://x/health", "127.0.0.1:9000", "http://", "http:///x"] {
        let spec = HealthSpec::new(HealthKind::Http {
            url: url.to_owned(),
        });
        assert_eq!(fields(spec), ["url"], "{url}");
    }
    assert_eq!(
        fields(HealthSpec::new(HealthKind::Exec { argv: vec![] })),
        ["argv"]
    );
    assert_eq!(
        fields(HealthSpec::new(HealthKind::Exec {
            argv: vec![String::new()]
        })),
        ["argv"]
    );
    assert_eq!(
        fields(HealthSpec::new(HealthKind::Heartbeat { every_ms: 0 })),
        ["every_ms"]
    );
    let bad = HealthSpec {
        period_ms: 0,
        timeout_ms: 0,
        failure_threshold: 0,
        initial_delay_ms: MAX_SPEC_MS + 1,
        ..http()
    };
    assert_eq!(
        fields(bad),
        [
            "period_ms",
            "timeout_ms",
            "failure_threshold",
            "initial_delay_ms"
        ]
    );
    let slow = HealthSpec {
        timeout_ms: 20 * S,
        failure_threshold: 101,
        ..http()
    };
    assert_eq!(
        slow.validate(),
        [
            (
                "timeout_ms".to_owned(),
                "20000 must be at least 1 and at most period_ms (10000)".to_owned()
            ),
            (
                "failure_threshold".to_owned(),
                "101 must be 1 to 100".to_owned()
            )
        ]
    );
}
