//! Tests of restart backoff and crash-loop detection with a fake clock.

use super::*;

const S: u64 = 1_000;

/// Crashes after `run_ms` each time, restarting when told; answers each restart's delay.
fn crash_delays(r: &mut Restarts, n: usize, run_ms: u64, clock: &mut u64) -> Vec<u64> {
    let mut delays = Vec::new();
    for _ in 0..n {
        let started = *clock;
        *clock += run_ms;
        match r.on_exit(*clock, ExitKind::Failure, started) {
            Decision::Restart { at, .. } => {
                delays.push((at - *clock) / S);
                *clock = at;
            }
            other => panic!("expected a restart, got {other:?}"),
        }
    }
    delays
}

#[test]
fn delays_double_up_to_the_cap() {
    let mut r = Restarts::new(BackoffConfig::default(), RestartPolicy::Always);
    let mut clock = 1_000_000;
    let delays = crash_delays(&mut r, 7, 2 * S, &mut clock);
    assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(r.restarts(), 7);
    assert_eq!(r.attempt(), 7);
}

#[test]
fn attempts_count_from_one() {
    let mut r = Restarts::new(BackoffConfig::default(), RestartPolicy::OnFailure);
    assert_eq!(
        r.on_exit(5 * S, ExitKind::Failure, 0),
        Decision::Restart {
            at: 15 * S,
            attempt: 1
        }
    );
    assert_eq!(
        r.on_exit(20 * S, ExitKind::Failure, 15 * S),
        Decision::Restart {
            at: 40 * S,
            attempt: 2
        }
    );
}

#[test]
fn a_healthy_run_resets_the_backoff() {
    let mut r = Restarts::new(BackoffConfig::default(), RestartPolicy::OnFailure);
    let mut clock = 0;
    assert_eq!(crash_delays(&mut r, 4, S, &mut clock), [10, 20, 40, 80]);
    // Ten minutes of healthy running, then a crash: back to the first delay.
    assert_eq!(crash_delays(&mut r, 1, 600 * S, &mut clock), [10]);
    assert_eq!(r.attempt(), 1);
    assert_eq!(crash_delays(&mut r, 1, S, &mut clock), [20]);
    // Just short of ten minutes does not reset.
    assert_eq!(crash_delays(&mut r, 1, 600 * S - 1, &mut clock), [40]);
    assert_eq!(r.restarts(), 7);
}

#[test]
fn policies() {
    let cfg = BackoffConfig::default();
    let mut never = Restarts::new(cfg.clone(), RestartPolicy::Never);
    assert_eq!(never.on_exit(S, ExitKind::Failure, 0), Decision::Done);
    assert_eq!(never.on_exit(S, ExitKind::Success, 0), Decision::Done);
    assert_eq!(never.restarts(), 0);

    let mut on_failure = Restarts::new(cfg.clone(), RestartPolicy::OnFailure);
    assert_eq!(on_failure.on_exit(S, ExitKind::Success, 0), Decision::Done);
    assert!(matches!(
        on_failure.on_exit(S, ExitKind::Failure, 0),
        Decision::Restart { attempt: 1, .. }
    ));

    // Always restarts after success too, with the same backoff.
    let mut always = Restarts::new(cfg, RestartPolicy::Always);
    assert_eq!(
        always.on_exit(S, ExitKind::Success, 0),
        Decision::Restart {
            at: 11 * S,
            attempt: 1
        }
    );
    assert_eq!(
        always.on_exit(12 * S, ExitKind::Success, 11 * S),
        Decision::Restart {
            at: 32 * S,
            attempt: 2
        }
    );
    assert_eq!(always.restarts(), 2);
}

#[test]
fn stopped_never_restarts() {
    for policy in [
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ] {
        let mut r = Restarts::new(BackoffConfig::default(), policy);
        assert_eq!(
            r.on_exit(S, ExitKind::Stopped, 0),
            Decision::Done,
            "{policy}"
        );
        assert_eq!(
            r.on_exit(1_000 * S, ExitKind::Stopped, 0),
            Decision::Done,
            "{policy}"
        );
        assert_eq!(r.restarts(), 0);
    }
}

#[test]
fn crash_loop_flag_sets_and_clears() {
    let mut r = Restarts::new(BackoffConfig::default(), RestartPolicy::Always);
    let mut clock = 0;
    crash_delays(&mut r, 4, S, &mut clock);
    assert!(!r.crash_looping());
    crash_delays(&mut r, 1, S, &mut clock);
    assert!(r.crash_looping());
    crash_delays(&mut r, 3, S, &mut clock);
    assert!(r.crash_looping());
    // A long run clears it (and the restart that follows it is not a short one).
    crash_delays(&mut r, 1, 600 * S, &mut clock);
    assert!(!r.crash_looping());
    crash_delays(&mut r, 4, S, &mut clock);
    assert!(!r.crash_looping());
    crash_delays(&mut r, 1, S, &mut clock);
    assert!(r.crash_looping());
}

#[test]
fn gives_up_only_when_configured() {
    let cfg = BackoffConfig {
        give_up_after: Some(2),
        ..BackoffConfig::default()
    };
    let mut r = Restarts::new(cfg, RestartPolicy::OnFailure);
    let mut clock = 0;
    crash_delays(&mut r, 2, S, &mut clock);
    assert_eq!(
        r.on_exit(clock + S, ExitKind::Failure, clock),
        Decision::GiveUp
    );
    assert_eq!(r.restarts(), 2);
    // A long run starts the count again.
    assert!(matches!(
        r.on_exit(clock + 600 * S, ExitKind::Failure, clock),
        Decision::Restart { attempt: 1, .. }
    ));
    // Without the option, it never gives up.
    let mut r = Restarts::new(BackoffConfig::default(), RestartPolicy::OnFailure);
    let mut clock = 0;
    assert_eq!(crash_delays(&mut r, 50, S, &mut clock).len(), 50);
}

#[test]
fn delay_never_overflows() {
    let cfg = BackoffConfig {
        initial_ms: MAX_CONFIG_MS,
        max_ms: MAX_CONFIG_MS,
        ..BackoffConfig::default()
    };
    assert_eq!(cfg.delay_ms(0), MAX_CONFIG_MS);
    assert_eq!(cfg.delay_ms(70), MAX_CONFIG_MS);
    assert_eq!(cfg.delay_ms(u32::MAX), MAX_CONFIG_MS);
    let mut r = Restarts::new(cfg, RestartPolicy::Always);
    assert!(matches!(
        r.on_exit(u64::MAX, ExitKind::Failure, u64::MAX),
        Decision::Restart { at: u64::MAX, .. }
    ));
    // A clock that went backwards counts as a zero-length run.
    assert!(matches!(
        r.on_exit(0, ExitKind::Failure, 10 * S),
        Decision::Restart { attempt: 2, .. }
    ));
}

#[test]
fn policy_round_trips() {
    for p in [
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ] {
        assert_eq!(p.to_string().parse::<RestartPolicy>(), Ok(p));
    }
    assert_eq!("on-failure".parse(), Ok(RestartPolicy::OnFailure));
    let err = "sometimes"
        .parse::<RestartPolicy>()
        .expect_err("not a policy");
    assert_eq!(
        err.to_string(),
        "\"sometimes\" is not a restart policy: use never, on-failure or always"
    );
}

#[test]
fn validate_names_fields() {
    assert!(BackoffConfig::default().validate().is_empty());
    let bad = BackoffConfig {
        initial_ms: 0,
        max_ms: MAX_CONFIG_MS + 1,
        reset_after_ms: 0,
        crash_loop_after: 0,
        give_up_after: Some(0),
    };
    let fields: Vec<String> = bad.validate().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "initial_ms",
            "max_ms",
            "reset_after_ms",
            "crash_loop_after",
            "give_up_after"
        ]
    );
    let inverted = BackoffConfig {
        initial_ms: 20_000,
        max_ms: 10_000,
        ..BackoffConfig::default()
    };
    assert_eq!(
        inverted.validate(),
        [(
            "max_ms".to_owned(),
            "10000 must be at least initial_ms (20000) and at most 86400000".to_owned()
        )]
    );
}

#[test]
fn a_resumed_count_goes_on_where_it_was() {
    let config = BackoffConfig::default();
    let mut r = Restarts::resume(config.clone(), RestartPolicy::Always, 7, false);
    assert_eq!(r.restarts(), 7);
    assert!(!r.crash_looping());
    let d = r.on_exit(10_000_000, ExitKind::Failure, 9_999_000);
    assert!(matches!(d, Decision::Restart { .. }), "{d:?}");
    assert_eq!(r.restarts(), 8);
    let looping = Restarts::resume(config.clone(), RestartPolicy::Always, 12, true);
    assert!(looping.crash_looping());
    assert_eq!(looping.attempt(), config.crash_loop_after);
}
