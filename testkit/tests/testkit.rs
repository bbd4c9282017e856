//! The simulation itself: determinism, and that the scenarios do to an
//! unprotected client what they claim.

use std::time::Duration;

use watertight_testkit::scenario::{
    run, Comparison, Scenario, ScenarioKind, ScenarioResult, Topology,
};
use watertight_testkit::stacks::Unprotected;
use watertight_testkit::{assert_that, Report};

fn short(kind: ScenarioKind) -> Scenario {
    Scenario::new(kind).scaled(0.2)
}

fn unprotected(kind: ScenarioKind, seed: u64) -> Report {
    run(&short(kind), &Topology::default(), &Unprotected, seed)
}

#[test]
fn same_seed_gives_byte_identical_json() {
    let a = unprotected(ScenarioKind::Brownout, 11).to_json();
    let b = unprotected(ScenarioKind::Brownout, 11).to_json();
    assert_eq!(a, b);
    let c = unprotected(ScenarioKind::Brownout, 12).to_json();
    assert_ne!(a, c, "a different seed draws different traffic");
}

#[test]
fn steady_state_is_healthy_and_spread_evenly() {
    let r = unprotected(ScenarioKind::Steady, 1);
    let t = Topology::default();
    // Half the capacity for 6 s.
    let expected = t.capacity_rps() * t.load * 6.0;
    assert!(
        (r.requests as f64 - expected).abs() < expected * 0.05,
        "{} vs {expected}",
        r.requests
    );
    assert_that(&r)
        .success_rate_at_least(1.0)
        .p99_at_most(Duration::from_millis(40));
    assert!(
        r.latency.p50_ms > 8.0 && r.latency.p50_ms < 13.0,
        "{}",
        r.latency.p50_ms
    );
    // Round robin: each of nine endpoints a ninth, a third of it local.
    for (id, n) in &r.per_endpoint {
        let share = *n as f64 / r.requests as f64;
        assert!((share - 1.0 / 9.0).abs() < 0.01, "{id}: {share}");
    }
    assert!((r.local_zone_share - 1.0 / 3.0).abs() < 0.02);
    assert_eq!(r.attempts_per_request, 1.0);
}

#[test]
fn zone_outage_costs_an_unprotected_client_a_third_of_the_outage() {
    let s = short(ScenarioKind::ZoneOutage);
    let r = run(&s, &Topology::default(), &Unprotected, 3);
    let outage_share = s.fault.as_secs_f64() / s.duration().as_secs_f64();
    let lost = 1.0 - r.success_rate;
    assert!(
        (lost - outage_share / 3.0).abs() < 0.02,
        "lost {lost}, outage share {outage_share}"
    );
    assert!(r.outcomes["status_503"] > 0);
}

#[test]
fn blackhole_requests_end_at_the_per_try_timeout() {
    let r = unprotected(ScenarioKind::ZoneBlackhole, 4);
    assert!(r.outcomes["error"] > 0, "{:?}", r.outcomes);
    let timeout = Topology::default().per_try_timeout.as_secs_f64() * 1000.0;
    assert!(
        (r.latency.max_ms - timeout).abs() < 1.0,
        "{}",
        r.latency.max_ms
    );
}

#[test]
fn gray_failure_slows_one_endpoint() {
    let r = unprotected(ScenarioKind::GrayFailure, 5);
    // A ninth of the requests go to a backend 20× slower: p99 far above steady.
    assert!(r.latency.p99_ms > 150.0, "{}", r.latency.p99_ms);
}

#[test]
fn overload_queues_on_the_backends() {
    let steady = unprotected(ScenarioKind::Steady, 6);
    let overload = unprotected(ScenarioKind::Overload, 6);
    assert!(overload.latency.p99_ms > 5.0 * steady.latency.p99_ms);
}

#[test]
fn brownout_fails_sixty_percent_in_its_window() {
    let s = short(ScenarioKind::Brownout);
    let r = run(&s, &Topology::default(), &Unprotected, 8);
    let window = s.fault.as_secs_f64() / s.duration().as_secs_f64();
    assert!(((1.0 - r.success_rate) - 0.6 * window).abs() < 0.03);
}

#[test]
fn comparison_json_has_the_documented_fields() {
    let r = unprotected(ScenarioKind::Steady, 1);
    let c = Comparison {
        seed: 1,
        results: vec![ScenarioResult::new(ScenarioKind::Steady, "none", &r)],
    };
    let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
    assert_eq!(v["seed"], 1);
    let row = &v["results"][0];
    for field in [
        "scenario",
        "stack",
        "requests",
        "success_rate",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "attempts_per_request",
        "local_zone_share",
    ] {
        assert!(!row[field].is_null(), "missing {field}");
    }
    assert_eq!(row["scenario"], "steady");
    assert!(c.table().contains("steady"));
}
