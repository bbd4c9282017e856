//! The recommended watertight stack in a shortened version of each scenario
//! of the comparison: the claims of BENCHMARKS.md, guarded in CI.
//!
//! Each scenario runs at a fifth of its length (one second of warm-up, the
//! fault for a fifth of its time, one second of tail), so the shares the
//! fault affects are the full run's; the targets are those of the
//! comparison, with the tolerance a shorter run needs where one is given.

use std::sync::OnceLock;
use std::time::Duration;

use watertight_testkit::scenario::{run, Scenario, ScenarioKind, Topology};
use watertight_testkit::stacks::{Unprotected, Watertight};
use watertight_testkit::{assert_that, Report};

const SCALE: f64 = 0.2;
const SEED: u64 = 1;

fn short(kind: ScenarioKind) -> Scenario {
    Scenario::new(kind).scaled(SCALE)
}

fn watertight(kind: ScenarioKind) -> Report {
    run(
        &short(kind),
        &Topology::default(),
        &Watertight::default(),
        SEED,
    )
}

/// The steady run, which several targets are relative to: simulated once.
fn steady() -> &'static Report {
    static STEADY: OnceLock<Report> = OnceLock::new();
    STEADY.get_or_init(|| watertight(ScenarioKind::Steady))
}

fn steady_p99() -> Duration {
    Duration::from_secs_f64(steady().latency.p99_ms / 1000.0)
}

#[test]
fn steady_serves_everything_in_the_local_zone() {
    let r = steady();
    assert_that(r)
        .requests_at_least(9_000)
        .success_rate_at_least(1.0)
        .local_zone_share_at_least(0.95)
        .attempts_per_request_at_most(1.0);
}

#[test]
fn zone_outage_costs_at_most_one_request_in_two_thousand() {
    let r = watertight(ScenarioKind::ZoneOutage);
    assert_that(&r)
        .requests_at_least(12_000)
        .success_rate_at_least(0.9995);
    // Zone c's client left its zone while it was down.
    assert!(r.local_zone_share < 0.9, "{}", r.summary());
}

#[test]
fn zone_blackhole_is_routed_around_within_a_per_try_timeout() {
    let r = watertight(ScenarioKind::ZoneBlackhole);
    let per_try = Topology::default().per_try_timeout;
    assert_that(&r)
        .success_rate_at_least(0.995)
        .p99_at_most(per_try + steady_p99());
    // Nothing was refused locally while the hung zone held requests.
    assert!(
        !r.outcomes.contains_key("error") || r.outcomes["error"] == 0,
        "{:?}",
        r.outcomes
    );
}

#[test]
fn gray_failure_keeps_p99_within_half_again_of_steady() {
    let r = watertight(ScenarioKind::GrayFailure);
    assert_that(&r)
        .success_rate_at_least(0.999)
        .p99_at_most(steady_p99().mul_f64(1.5));
    // The slow endpoint is taken out of its zone's rotation.
    assert_that(&r).endpoint_share_at_most("a-1", 0.04);
}

#[test]
fn flapping_endpoint_costs_neither_requests_nor_retries() {
    let r = watertight(ScenarioKind::Flapping);
    assert_that(&r)
        .success_rate_at_least(0.999)
        .attempts_per_request_at_most(1.05);
}

#[test]
fn brownout_brings_no_retry_storm() {
    let r = watertight(ScenarioKind::Brownout);
    assert_that(&r).attempts_per_request_at_most(1.25);
    // The retries it does send cost nothing: it does as well as a client
    // that never retries.
    let none = run(
        &short(ScenarioKind::Brownout),
        &Topology::default(),
        &Unprotected,
        SEED,
    );
    assert!(
        r.success_rate >= none.success_rate - 0.01,
        "watertight {} vs none {}",
        r.summary(),
        none.summary()
    );
}

#[test]
fn overload_sheds_at_once_instead_of_queueing() {
    let r = watertight(ScenarioKind::Overload);
    assert_that(&r)
        .success_p99_at_most(steady_p99() * 3)
        .attempts_per_request_at_most(1.1);
    // It still serves about the capacity: half of twice the capacity during
    // the overload, all of the rest.
    assert!(r.success_rate > 0.45, "{}", r.summary());
}

#[test]
fn same_seed_gives_byte_identical_reports() {
    let s = short(ScenarioKind::ZoneBlackhole);
    let t = Topology::default();
    let a = run(&s, &t, &Watertight::default(), 5).to_json();
    let b = run(&s, &t, &Watertight::default(), 5).to_json();
    assert_eq!(a, b);
    let c = run(&s, &t, &Watertight::default(), 6).to_json();
    assert_ne!(a, c, "another seed draws other traffic");
}

#[cfg(feature = "proptest")]
mod fault_schedules {
    use proptest::prelude::*;
    use watertight_testkit::scenario::simulate;
    use watertight_testkit::strategy::script;
    use watertight_testkit::Script;

    use super::*;

    const HORIZON: Duration = Duration::from_secs(4);

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Whatever goes wrong with one endpoint (errors at any rate,
        /// slowdowns, black holes, in up to three stretches), the stack
        /// routes around it: at most one request in two hundred is lost,
        /// and retries add at most a tenth.
        #[test]
        fn any_fault_schedule_on_one_endpoint_costs_little(
            faulty in 0usize..9,
            schedule in script(HORIZON, 3),
            seed in 0u64..1_000,
        ) {
            let topology = Topology::default();
            let mut scripts = vec![Script::healthy(); 9];
            scripts[faulty] = schedule;
            let rate = Scenario::new(ScenarioKind::Steady).rate(&topology);
            let r = simulate(&topology, &scripts, &rate, HORIZON, &Watertight::default(), seed);
            prop_assert!(r.requests > 5_000, "{}", r.summary());
            prop_assert!(r.success_rate >= 0.995, "{}", r.summary());
            prop_assert!(r.attempts_per_request <= 1.1, "{}", r.summary());
        }
    }
}
