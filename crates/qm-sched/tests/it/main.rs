//! qm-sched's integration tests: golden scenarios through one `check` helper, property tests
//! of the ledger's invariants under every built-in strategy, and the registry's rules.

mod exact;
mod golden;
mod props;
mod registry;
mod scenario;

use expect_test::Expect;

/// Runs a scenario (see `scenario.rs`) and compares its transcript with `expect`.
fn check(script: &str, expect: Expect) {
    expect.assert_eq(&scenario::run(script));
}
