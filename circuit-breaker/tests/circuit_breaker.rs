//! The circuit breaker, driven through `tower_test::mock` in paused time.

mod model;
mod support;

use std::time::Duration;

use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::Layer;
use tower_test::mock::{self, Spawn};
use watertight_circuit_breaker::event::{Cause, Event, Policy};
use watertight_circuit_breaker::{Backoff, BreakerGroup, CircuitBreakerLayer, Mode, State};
use watertight_core::classify::classify_fn;
use watertight_core::ResponseClass;

use support::*;

const MS: Duration = Duration::from_millis(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn tripped_by(events: &Events) -> Vec<Policy> {
    match events.transitions().last().map(|t| t.cause) {
        Some(Cause::Tripped(t)) => t.iter().collect(),
        other => panic!("expected a trip, got {other:?}"),
    }
}

// ---- trip policies -------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_count_window_trips_when_the_rate_reaches_the_threshold() {
    let events = Events::default();
    let mut cb = spawn(
        failure_rate(0.5, 10)
            .count_window(10)
            .on_event(events.listener()),
    );
    // Alternate so no run of failures is long; 9 calls, 4 failures.
    for i in 0..9 {
        let reply = if i % 2 == 1 { Reply::Err } else { Reply::Ok };
        cb.calls(1, reply);
    }
    assert_eq!(cb.state(), State::Closed);
    // The tenth call: 5 failures out of 10 is exactly the threshold.
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
    assert_eq!(tripped_by(&events), [Policy::FailureRate]);
    let t = events.transitions().pop().unwrap();
    assert_eq!((t.window.calls, t.window.failures), (10, 5));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_count_window_counts_only_the_last_calls() {
    let mut cb = spawn(failure_rate(0.5, 4).count_window(4));
    cb.calls(1, Reply::Err);
    cb.calls(3, Reply::Ok);
    // The failure is pushed out by the next success: 1 of the last 4 failed.
    cb.calls(1, Reply::Ok);
    cb.calls(1, Reply::Err);
    let s = cb.snapshot();
    assert_eq!((s.window.calls, s.window.failures), (4, 1));
    assert_eq!(cb.state(), State::Closed);
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open, "2 of the last 4 failed");
}

#[tokio::test(start_paused = true)]
async fn failure_rate_waits_for_minimum_calls() {
    let mut cb = spawn(failure_rate(0.5, 10).count_window(100));
    cb.calls(9, Reply::Err);
    let s = cb.snapshot();
    assert_eq!((s.window.calls, s.window.failure_rate), (9, 1.0));
    assert_eq!(cb.state(), State::Closed, "9 calls are under the minimum");
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_that_completes_minimum_calls_trips_when_the_rate_is_over() {
    let mut cb = spawn(failure_rate(0.5, 10).count_window(100));
    cb.calls(9, Reply::Err);
    assert_eq!(cb.state(), State::Closed);
    cb.calls(1, Reply::Ok);
    assert_eq!(cb.state(), State::Open, "9 failures in 10 calls");
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_above_the_count_window_size_acts_as_the_size() {
    let mut cb = spawn(failure_rate(1.0, 50).count_window(5));
    cb.calls(4, Reply::Err);
    assert_eq!(cb.state(), State::Closed);
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open, "a full window is enough");
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_time_window_trips_within_the_window() {
    let events = Events::default();
    let mut cb = spawn(
        failure_rate(0.5, 4)
            .time_window(secs(10), 10)
            .on_event(events.listener()),
    );
    cb.calls(1, Reply::Ok);
    cb.calls(1, Reply::Err);
    advance(secs(3)).await;
    cb.calls(1, Reply::Ok);
    assert_eq!(cb.state(), State::Closed);
    advance(secs(3)).await;
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
    assert_eq!(tripped_by(&events), [Policy::FailureRate]);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_time_window_forgets_calls_older_than_the_window() {
    let mut cb = spawn(failure_rate(0.5, 4).time_window(secs(10), 10));
    cb.calls(3, Reply::Err);
    advance(secs(11)).await;
    assert_eq!(cb.snapshot().window.calls, 0, "the failures fell out");
    cb.calls(3, Reply::Ok);
    cb.calls(1, Reply::Err);
    let s = cb.snapshot();
    assert_eq!((s.window.calls, s.window.failures), (4, 1));
    assert_eq!(cb.state(), State::Closed, "had they counted: 4 of 7 failed");
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_time_window_waits_for_minimum_calls() {
    let mut cb = spawn(failure_rate(0.5, 5).time_window(secs(10), 10));
    cb.calls(4, Reply::Err);
    assert_eq!(cb.state(), State::Closed);
    // Old failures leaving the window do not count towards the minimum.
    advance(secs(11)).await;
    cb.calls(4, Reply::Err);
    assert_eq!(cb.state(), State::Closed);
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips_on_slow_successes() {
    let events = Events::default();
    let mut cb = spawn(
        builder()
            .slow_call_duration(secs(1))
            .slow_call_rate_threshold(0.5)
            .count_window(4)
            .minimum_calls(4)
            .on_event(events.listener()),
    );
    cb.calls(2, Reply::Ok);
    for _ in 0..2 {
        let c = cb.start();
        advance(secs(1) + MS).await;
        c.answer(Reply::Ok).unwrap();
    }
    assert_eq!(cb.state(), State::Open);
    assert_eq!(tripped_by(&events), [Policy::SlowCallRate]);
    let t = events.transitions().pop().unwrap();
    assert_eq!(
        (t.window.calls, t.window.slow_calls, t.window.failures),
        (4, 2, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_of_exactly_the_slow_call_duration_is_not_slow() {
    let mut cb = spawn(
        builder()
            .slow_call_duration(secs(1))
            .count_window(4)
            .minimum_calls(1),
    );
    let c = cb.start();
    advance(secs(1)).await;
    c.answer(Reply::Ok).unwrap();
    assert_eq!(cb.snapshot().window.slow_calls, 0);
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_waits_for_minimum_calls() {
    let mut cb = spawn(
        builder()
            .slow_call_duration(secs(1))
            .slow_call_rate_threshold(1.0)
            .count_window(10)
            .minimum_calls(3),
    );
    for expected in [State::Closed, State::Closed, State::Open] {
        let c = cb.start();
        advance(secs(2)).await;
        c.answer(Reply::Ok).unwrap();
        assert_eq!(cb.state(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_after_that_many_in_a_row() {
    let events = Events::default();
    let mut cb = spawn(
        builder()
            .consecutive_failures(3)
            .on_event(events.listener()),
    );
    cb.calls(2, Reply::Err);
    cb.calls(1, Reply::Ok);
    cb.calls(2, Reply::Err);
    assert_eq!(cb.snapshot().consecutive_failures, 2);
    assert_eq!(cb.state(), State::Closed, "a success broke the run");
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
    assert_eq!(tripped_by(&events), [Policy::ConsecutiveFailures]);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_are_not_gated_by_minimum_calls() {
    let mut cb = spawn(builder().consecutive_failures(2).minimum_calls(100));
    cb.calls(2, Reply::Err);
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn policies_that_fire_together_are_all_named() {
    let events = Events::default();
    let mut cb = spawn(
        builder()
            .consecutive_failures(4)
            .failure_rate_threshold(1.0)
            .count_window(4)
            .minimum_calls(4)
            .on_event(events.listener()),
    );
    cb.calls(4, Reply::Err);
    assert_eq!(
        tripped_by(&events),
        [Policy::FailureRate, Policy::ConsecutiveFailures]
    );
}

#[tokio::test(start_paused = true)]
async fn ignored_results_count_nowhere() {
    let layer = builder()
        .consecutive_failures(1)
        .failure_rate_threshold(0.5)
        .minimum_calls(1)
        .classify(classify_fn(|r: &Result<Res, BoxErrorAlias>| match r {
            Ok(_) => ResponseClass::Success,
            Err(_) => ResponseClass::Ignored,
        }))
        .build()
        .unwrap();
    let (mut svc, mut h) = mock::spawn_layer::<Req, Res, _>(layer);
    for _ in 0..5 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call("req");
        let (_, send) = h.next_request().await.unwrap();
        send.send_error("cancelled by the client");
        assert!(fut.await.is_err(), "the error still reaches the caller");
    }
    let s = svc.get_ref().handle().snapshot();
    assert_eq!(
        (s.state, s.window.calls, s.consecutive_failures),
        (State::Closed, 0, 0)
    );
}

type BoxErrorAlias = watertight_core::BoxError;

// ---- open and half-open --------------------------------------------------

/// A breaker that trips on one failure.
fn tripping() -> watertight_circuit_breaker::Builder {
    builder().consecutive_failures(1)
}

#[tokio::test(start_paused = true)]
async fn open_rejects_until_the_open_duration_has_passed() {
    let mut cb = spawn(tripping().open_duration(secs(5)));
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
    let open = cb.start().rejection();
    assert_eq!((open.state(), open.retry_after()), (State::Open, secs(5)));

    advance(secs(5) - MS).await;
    let open = cb.start().rejection();
    assert_eq!(open.retry_after(), MS);
    assert_eq!(cb.state(), State::Open);

    advance(MS).await;
    let probe = cb.start();
    assert!(probe.reached_backend(), "the probe window opened");
    assert_eq!(cb.state(), State::HalfOpen);
    probe.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_over_repeated_trips_and_starts_over_on_close() {
    let events = Events::default();
    let backoff = Backoff::exponential(secs(1), secs(4)).unwrap();
    let mut cb = spawn(tripping().open_backoff(backoff).on_event(events.listener()));
    cb.calls(1, Reply::Err);
    let mut open_for = vec![];
    for _ in 0..4 {
        let d = cb.snapshot().retry_after.unwrap();
        open_for.push(d);
        advance(d - MS).await;
        assert!(!cb.start().reached_backend(), "still open");
        advance(MS).await;
        // The probe fails: open again, for longer.
        assert_eq!(
            cb.call(Reply::Err).unwrap_err().to_string(),
            "backend failed"
        );
    }
    assert_eq!(
        open_for,
        [secs(1), secs(2), secs(4), secs(4)],
        "capped at max"
    );
    assert_eq!(cb.snapshot().trips, 5);

    let d = cb.snapshot().retry_after.unwrap();
    advance(d).await;
    cb.call(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
    cb.calls(1, Reply::Err);
    assert_eq!(
        cb.snapshot().retry_after,
        Some(secs(1)),
        "closing starts the backoff over"
    );
    let opens: Vec<_> = events
        .transitions()
        .iter()
        .filter_map(|t| t.open_for)
        .collect();
    assert_eq!(
        opens,
        [secs(1), secs(2), secs(4), secs(4), secs(4), secs(1)]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_permitted_probes_at_once() {
    let mut cb = spawn(tripping().permitted_probes(3).success_threshold(3));
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let probes: Vec<_> = (0..3).map(|_| cb.start()).collect();
    assert!(probes.iter().all(InFlight::reached_backend));
    assert_eq!(cb.snapshot().probes_in_flight, 3);

    let open = cb.start().rejection();
    assert_eq!(
        (open.state(), open.retry_after()),
        (State::HalfOpen, Duration::ZERO)
    );

    let mut probes = probes.into_iter();
    probes.next().unwrap().answer(Reply::Ok).unwrap();
    let s = cb.snapshot();
    assert_eq!(
        (s.state, s.probes_in_flight, s.probe_successes),
        (State::HalfOpen, 2, 1)
    );
    let fourth = cb.start();
    assert!(
        fourth.reached_backend(),
        "a returned permit admits the next probe"
    );
    assert!(!cb.start().reached_backend());
    for p in probes.chain([fourth]) {
        p.answer(Reply::Ok).unwrap();
    }
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn success_threshold_probe_successes_close_the_breaker() {
    let mut cb = spawn(tripping().success_threshold(3));
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    for expected in [State::HalfOpen, State::HalfOpen, State::Closed] {
        cb.call(Reply::Ok).unwrap();
        assert_eq!(cb.state(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_the_breaker() {
    let events = Events::default();
    let mut cb = spawn(tripping().success_threshold(2).on_event(events.listener()));
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    cb.call(Reply::Ok).unwrap();
    cb.call(Reply::Err).unwrap_err();
    assert_eq!(cb.state(), State::Open);
    assert_eq!(
        events.transitions().last().unwrap().cause,
        Cause::ProbeFailed
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_reopens_the_breaker_when_slow_calls_trip_it() {
    let events = Events::default();
    let mut cb = spawn(
        builder()
            .slow_call_duration(secs(1))
            .slow_call_rate_threshold(0.5)
            .count_window(2)
            .minimum_calls(2)
            .on_event(events.listener()),
    );
    for _ in 0..2 {
        let c = cb.start();
        advance(secs(2)).await;
        c.answer(Reply::Ok).unwrap();
    }
    assert_eq!(cb.state(), State::Open);
    advance(secs(5)).await;

    // The probe succeeds, but as slowly as the calls that tripped it.
    let probe = cb.start();
    assert_eq!(cb.state(), State::HalfOpen);
    advance(secs(2)).await;
    probe.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Open);
    assert_eq!(
        events.transitions().last().unwrap().cause,
        Cause::ProbeFailed
    );
    assert_eq!(cb.snapshot().trips, 2);

    // A fast probe closes it.
    advance(secs(10)).await;
    let probe = cb.start();
    assert_eq!(cb.state(), State::HalfOpen);
    advance(secs(1)).await;
    probe.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_closes_the_breaker_when_the_slow_call_policy_is_off() {
    let mut cb = spawn(tripping());
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let probe = cb.start();
    advance(secs(60)).await;
    probe.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_permit_and_counts_nothing() {
    let mut cb = spawn(tripping());
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let probe = cb.start();
    assert!(probe.reached_backend());
    let before = cb.snapshot();
    assert_eq!(
        (before.state, before.probes_in_flight),
        (State::HalfOpen, 1)
    );
    assert!(!cb.start().reached_backend(), "the only permit is taken");

    drop(probe);
    let after = cb.snapshot();
    assert_eq!(
        (
            after.state,
            after.generation,
            after.probes_in_flight,
            after.probe_successes
        ),
        (State::HalfOpen, before.generation, 0, 0),
        "the cancelled probe counted nothing"
    );
    let next = cb.start();
    assert!(next.reached_backend(), "its permit went to the next call");
    next.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_late_failure_from_an_earlier_generation_does_not_reopen_a_closed_breaker() {
    let mut cb = spawn(tripping());
    let slow = cb.start();
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
    advance(secs(5)).await;
    cb.call(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
    let generation = cb.snapshot().generation;

    // Admitted before the trip, it fails now: one failure would trip a
    // breaker of this generation.
    slow.answer(Reply::Err).unwrap_err();
    let s = cb.snapshot();
    assert_eq!((s.state, s.generation), (State::Closed, generation));
    assert_eq!(
        (s.consecutive_failures, s.window.calls, s.late_results),
        (0, 0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_probe_failure_does_not_reopen_a_closed_breaker() {
    let mut cb = spawn(tripping().permitted_probes(2));
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let first = cb.start();
    let second = cb.start();
    first.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
    second.answer(Reply::Err).unwrap_err();
    let s = cb.snapshot();
    assert_eq!((s.state, s.late_results), (State::Closed, 1));
}

#[tokio::test(start_paused = true)]
async fn max_half_open_duration_reopens_a_stuck_half_open_breaker() {
    let events = Events::default();
    let mut cb = spawn(
        tripping()
            .max_half_open_duration(secs(10))
            .on_event(events.listener()),
    );
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let stuck = cb.start();
    assert!(stuck.reached_backend());

    advance(secs(10) - MS).await;
    assert_eq!(cb.start().rejection().state(), State::HalfOpen);
    advance(MS).await;
    let open = cb.start().rejection();
    assert_eq!(open.state(), State::Open);
    assert_eq!(
        events.transitions().last().unwrap().cause,
        Cause::HalfOpenTimedOut
    );
    // The stuck probe's answer belongs to a period that is over.
    stuck.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_comes_back_restarts_the_half_open_deadline() {
    let mut cb = spawn(
        tripping()
            .success_threshold(2)
            .max_half_open_duration(secs(10)),
    );
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let first = cb.start();
    advance(secs(8)).await;
    first.answer(Reply::Ok).unwrap();
    let _second = cb.start();
    advance(secs(9)).await;
    assert_eq!(cb.start().rejection().state(), State::HalfOpen);
    advance(secs(1)).await;
    assert_eq!(cb.start().rejection().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn without_max_half_open_duration_a_stuck_probe_keeps_it_half_open() {
    let mut cb = spawn(tripping().max_half_open_duration(None));
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let _stuck = cb.start();
    advance(secs(3600)).await;
    assert_eq!(cb.start().rejection().state(), State::HalfOpen);
}

// ---- backpressure --------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn backpressure_is_pending_while_open_and_woken_exactly_at_the_probe_time() {
    let mut cb = spawn(tripping().mode(Mode::Backpressure).open_duration(secs(5)));
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
    assert_pending!(cb.svc.poll_ready());

    advance(secs(5) - MS).await;
    assert!(!cb.svc.is_woken(), "woken before the probe window opened");
    assert_pending!(cb.svc.poll_ready());
    advance(MS).await;
    assert!(cb.svc.is_woken(), "not woken when the probe window opened");

    let probe = cb.start();
    assert!(probe.reached_backend());
    assert_eq!(cb.state(), State::HalfOpen);
    probe.answer(Reply::Ok).unwrap();
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn backpressure_counts_no_rejection() {
    let mut cb = spawn(tripping().mode(Mode::Backpressure));
    cb.calls(1, Reply::Err);
    assert_pending!(cb.svc.poll_ready());
    assert_pending!(cb.svc.poll_ready());
    assert_eq!(cb.snapshot().rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn backpressure_is_woken_when_a_probe_permit_comes_back() {
    let mut cb = spawn(
        tripping()
            .mode(Mode::Backpressure)
            .success_threshold(2)
            .max_half_open_duration(None),
    );
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let probe = cb.start();
    assert!(probe.reached_backend());

    let mut other = Spawn::new(cb.svc.get_ref().clone());
    assert_pending!(other.poll_ready());
    probe.answer(Reply::Ok).unwrap();
    assert!(other.is_woken());
    assert_ready_ok!(other.poll_ready());
    assert_eq!(
        cb.snapshot().probes_in_flight,
        1,
        "the reservation holds a permit"
    );
}

#[tokio::test(start_paused = true)]
async fn backpressure_is_woken_when_a_probe_is_cancelled() {
    let mut cb = spawn(
        tripping()
            .mode(Mode::Backpressure)
            .max_half_open_duration(None),
    );
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let probe = cb.start();
    let mut other = Spawn::new(cb.svc.get_ref().clone());
    assert_pending!(other.poll_ready());
    drop(probe);
    assert!(other.is_woken());
    assert_ready_ok!(other.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn backpressure_is_woken_at_max_half_open_duration() {
    let mut cb = spawn(
        tripping()
            .mode(Mode::Backpressure)
            .open_duration(secs(5))
            .max_half_open_duration(secs(10)),
    );
    cb.calls(1, Reply::Err);
    advance(secs(5)).await;
    let _stuck = cb.start();
    let mut other = Spawn::new(cb.svc.get_ref().clone());
    assert_pending!(other.poll_ready());
    advance(secs(10) - MS).await;
    assert!(!other.is_woken());
    advance(MS).await;
    assert!(other.is_woken());
    // The breaker reopens, and the service waits for the next probe time.
    assert_pending!(other.poll_ready());
    assert_eq!(cb.state(), State::Open);
    advance(secs(5)).await;
    assert!(other.is_woken());
    assert_ready_ok!(other.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn backpressure_is_woken_by_a_manual_transition() {
    let mut cb = spawn(builder().mode(Mode::Backpressure));
    let handle = cb.handle();
    assert!(handle.force_open());
    assert_pending!(cb.svc.poll_ready());
    advance(secs(3600)).await;
    assert!(
        !cb.svc.is_woken(),
        "a forced-open breaker has no probe time"
    );
    assert!(handle.force_close());
    assert!(cb.svc.is_woken());
    assert_ready_ok!(cb.svc.poll_ready());
}

// ---- manual states -------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_every_call_until_closed_by_hand() {
    let events = Events::default();
    let mut cb = spawn(tripping().on_event(events.listener()));
    let handle = cb.handle();
    assert!(handle.force_open());
    assert!(!handle.force_open(), "already forced open");
    advance(secs(3600)).await;
    let open = cb.start().rejection();
    assert_eq!(
        (open.state(), open.retry_after()),
        (State::ForcedOpen, Duration::MAX)
    );
    assert_eq!(open.to_string(), "circuit breaker is forced open");
    assert_eq!(cb.snapshot().rejected, 1);
    assert!(handle.force_close());
    cb.call(Reply::Ok).unwrap();
    assert_eq!(
        events.path(),
        [
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Closed)
        ]
    );
    assert!(events
        .transitions()
        .iter()
        .all(|t| t.cause == Cause::Manual));
}

#[tokio::test(start_paused = true)]
async fn disabled_passes_every_call_and_records_nothing() {
    let mut cb = spawn(tripping().failure_rate_threshold(0.5).minimum_calls(1));
    let handle = cb.handle();
    assert!(handle.disable());
    cb.calls(10, Reply::Err);
    let s = cb.snapshot();
    assert_eq!(
        (s.state, s.window.calls, s.consecutive_failures),
        (State::Disabled, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_only_records_every_call_and_never_trips() {
    let mut cb = spawn(tripping().failure_rate_threshold(0.5).minimum_calls(1));
    let handle = cb.handle();
    assert!(handle.metrics_only());
    cb.calls(10, Reply::Err);
    let s = cb.snapshot();
    assert_eq!(
        (s.state, s.window.failures, s.consecutive_failures),
        (State::MetricsOnly, 10, 10)
    );
    // Closing by hand keeps what was recorded: the next failure trips.
    assert!(handle.force_close());
    assert_eq!(cb.snapshot().window.failures, 10);
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn force_close_from_open_starts_a_fresh_closed_period() {
    let mut cb = spawn(builder().consecutive_failures(2));
    cb.calls(2, Reply::Err);
    let handle = cb.handle();
    assert!(handle.force_close());
    let s = cb.snapshot();
    assert_eq!((s.state, s.consecutive_failures), (State::Closed, 0));
    cb.calls(1, Reply::Err);
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn reset_starts_everything_over() {
    let events = Events::default();
    let mut cb = spawn(tripping().on_event(events.listener()));
    cb.calls(1, Reply::Err);
    let _ = cb.start().rejection();
    let handle = cb.handle();
    handle.reset();
    let s = cb.snapshot();
    assert_eq!(
        (s.state, s.trips, s.rejected, s.transitions, s.window.calls),
        (State::Closed, 0, 0, 0, 0)
    );
    assert_eq!(events.transitions().last().unwrap().cause, Cause::Reset);
    cb.calls(1, Reply::Err);
    assert_eq!(cb.snapshot().retry_after, Some(secs(5)));
}

// ---- events, errors, sharing ---------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_transition_and_rejection_is_an_event() {
    let events = Events::default();
    let mut cb = spawn(tripping().on_event(events.listener()));
    cb.calls(1, Reply::Err);
    let _ = cb.start().rejection();
    advance(secs(5)).await;
    cb.call(Reply::Ok).unwrap();
    assert_eq!(
        events.path(),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    let generations: Vec<_> = events.transitions().iter().map(|t| t.generation).collect();
    assert_eq!(generations, [1, 2, 3]);
    let causes: Vec<_> = events.transitions().iter().map(|t| t.cause).collect();
    assert_eq!(&causes[1..], [Cause::OpenElapsed, Cause::ProbesSucceeded]);
    let rejected: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Rejected(r) => Some((r.state, r.retry_after, r.name.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(rejected, [(State::Open, secs(5), "test".to_owned())]);
}

// ---- groups --------------------------------------------------------------

/// `n` breakers of one layer (each service its own breaker), in `group`.
fn members(builder: watertight_circuit_breaker::Builder, n: usize) -> Vec<Harness<Breaker>> {
    let layer = builder.build().expect("valid configuration");
    (0..n).map(|_| Harness::new(layer.clone())).collect()
}

fn open_members(members: &[Harness<Breaker>]) -> usize {
    members.iter().filter(|m| m.state() == State::Open).count()
}

#[tokio::test(start_paused = true)]
async fn a_group_refuses_trips_beyond_its_open_share() {
    let group = BreakerGroup::new(34.0).unwrap();
    let events = Events::default();
    let mut m = members(
        tripping().group(group.clone()).on_event(events.listener()),
        6,
    );
    assert_eq!(group.members(), 6);
    for cb in &mut m {
        cb.calls(1, Reply::Err);
    }
    // 2 of 6 is 33%; a third would be 50%.
    assert_eq!(open_members(&m), 2);
    assert_eq!((group.open(), group.refused()), (2, 4));
    let refused: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::TripRefused(r) => Some((r.open, r.members)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [(2, 6); 4]);
    // A refused breaker stays closed and keeps serving.
    assert_eq!(m[5].state(), State::Closed);
    m[5].call(Reply::Ok).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_member_that_closes_makes_room_for_another_to_trip() {
    let group = BreakerGroup::new(34.0).unwrap();
    let mut m = members(tripping().group(group.clone()), 6);
    for cb in &mut m {
        cb.calls(1, Reply::Err);
    }
    assert_eq!(open_members(&m), 2);
    // Half-open still holds its slot.
    advance(secs(5)).await;
    let probe = m[0].start();
    assert_eq!(m[0].state(), State::HalfOpen);
    m[2].calls(1, Reply::Err);
    assert_eq!(m[2].state(), State::Closed);
    // Its probe succeeds: closed, and the slot is free.
    probe.answer(Reply::Ok).unwrap();
    assert_eq!(m[0].state(), State::Closed);
    assert_eq!(group.open(), 1);
    m[2].calls(1, Reply::Err);
    assert_eq!(m[2].state(), State::Open);
    assert_eq!(group.open(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_member_at_the_cap_reopens_when_its_probe_fails_and_frees_its_slot_when_reset() {
    let group = BreakerGroup::new(34.0).unwrap();
    let mut m = members(tripping().group(group.clone()), 6);
    for cb in &mut m {
        cb.calls(1, Reply::Err);
    }
    assert_eq!((group.open(), group.refused()), (2, 4));
    advance(secs(5)).await;
    let err = m[0].call(Reply::Err).unwrap_err();
    assert_eq!(err.to_string(), "backend failed", "the probe went");
    assert_eq!(m[0].state(), State::Open, "it kept its slot");
    assert_eq!((group.open(), group.refused()), (2, 4));
    // Closed by hand, it gives the slot back.
    m[0].handle().reset();
    assert_eq!(group.open(), 1);
}

#[tokio::test(start_paused = true)]
async fn one_member_may_always_open() {
    let group = BreakerGroup::new(0.0).unwrap();
    let mut m = members(tripping().group(group.clone()), 9);
    for cb in &mut m {
        cb.calls(1, Reply::Err);
    }
    assert_eq!(open_members(&m), 1);
    assert_eq!(group.refused(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_member_leaves_its_group_and_its_slot() {
    let group = BreakerGroup::new(50.0).unwrap();
    let mut m = members(tripping().group(group.clone()), 4);
    for cb in m.iter_mut().take(2) {
        cb.calls(1, Reply::Err);
    }
    assert_eq!((group.members(), group.open()), (4, 2));
    drop(m.remove(0));
    assert_eq!((group.members(), group.open()), (3, 1));
    // One of three open: a second would be 67%.
    m[1].calls(1, Reply::Err);
    assert_eq!(m[1].state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_by_hand_is_not_limited_by_the_group() {
    let group = BreakerGroup::new(0.0).unwrap();
    let mut m = members(tripping().group(group.clone()), 3);
    m[0].calls(1, Reply::Err);
    m[1].handle().force_open();
    m[2].handle().force_open();
    assert!(m[1..].iter().all(|cb| cb.state() == State::ForcedOpen));
    assert_eq!(group.open(), 1);
}

#[test]
fn invalid_group_input_is_a_typed_error_naming_the_field() {
    for percent in [-1.0, 100.5, f64::NAN] {
        let e = BreakerGroup::new(percent).unwrap_err();
        assert_eq!(e.field(), "max_open_percent", "{percent}");
    }
    let keyed = CircuitBreakerLayer::builder()
        .group(BreakerGroup::new(50.0).unwrap())
        .keyed(|r: &&str| r.len())
        .build()
        .unwrap_err();
    assert_eq!(keyed.field(), "group");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let mut cb = spawn(builder());
    let err = cb.call(Reply::Err).unwrap_err();
    assert_eq!(err.to_string(), "backend failed");
    assert!(open(&err).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_open_rejection_says_when_to_retry() {
    let mut cb = spawn(tripping().open_duration(secs(30)));
    cb.calls(1, Reply::Err);
    advance(secs(10)).await;
    let open = cb.start().rejection();
    assert_eq!(open.retry_after(), secs(20));
    assert_eq!(
        open.to_string(),
        "circuit breaker is open; next probe in 20s"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_service_share_its_breaker() {
    let mut cb = spawn(tripping());
    let mut other = Spawn::new(cb.svc.get_ref().clone());
    cb.calls(1, Reply::Err);
    assert!(other.get_ref().handle().same_breaker(&cb.handle()));
    assert_ready_ok!(other.poll_ready());
    let err = other.call("req").await.unwrap_err();
    assert_eq!(open(&err).unwrap().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_layer_gives_each_service_its_own_breaker_unless_shared() {
    let layer = tripping().build().unwrap();
    let (a, _ha) = mock::pair::<Req, Res>();
    let (b, _hb) = mock::pair::<Req, Res>();
    let (sa, sb) = (layer.layer(a.clone()), layer.layer(b.clone()));
    assert!(!sa.handle().same_breaker(&sb.handle()));

    let (shared, handle) = layer.shared();
    let (sa, sb) = (shared.layer(a), shared.layer(b));
    assert!(sa.handle().same_breaker(&sb.handle()));
    assert!(sa.handle().same_breaker(&handle));
}

#[tokio::test(start_paused = true)]
async fn get_ref_get_mut_and_into_inner_reach_the_inner_service() {
    let layer = CircuitBreakerLayer::new();
    let mut svc = layer.layer(7u32);
    assert_eq!(*svc.get_ref(), 7);
    *svc.get_mut() = 8;
    assert_eq!(svc.into_inner(), 8);
}

// ---- configuration -------------------------------------------------------

#[test]
fn invalid_builder_input_is_a_typed_error_naming_the_field() {
    use watertight_circuit_breaker::Builder;
    let b = CircuitBreakerLayer::builder;
    let cases: Vec<(&str, Builder)> = vec![
        ("name", b().name("")),
        ("failure_rate_threshold", b().failure_rate_threshold(0.0)),
        ("failure_rate_threshold", b().failure_rate_threshold(1.5)),
        (
            "failure_rate_threshold",
            b().failure_rate_threshold(f64::NAN),
        ),
        ("minimum_calls", b().minimum_calls(0)),
        ("window.size", b().count_window(0)),
        ("window.size", b().count_window(usize::MAX)),
        ("window.duration", b().time_window(Duration::ZERO, 10)),
        ("window.buckets", b().time_window(secs(10), 0)),
        (
            "window.buckets",
            b().time_window(Duration::from_nanos(5), 10),
        ),
        ("slow_call_duration", b().slow_call_duration(Duration::ZERO)),
        (
            "slow_call_rate_threshold",
            b().slow_call_rate_threshold(-0.1),
        ),
        ("consecutive_failures", b().consecutive_failures(0)),
        ("open_duration", b().open_duration(Duration::ZERO)),
        ("permitted_probes", b().permitted_probes(0)),
        ("permitted_probes", b().permitted_probes(70_000)),
        ("success_threshold", b().success_threshold(0)),
        (
            "max_half_open_duration",
            b().max_half_open_duration(Duration::ZERO),
        ),
    ];
    for (field, builder) in cases {
        let err = builder.build().expect_err(field);
        assert_eq!((err.component(), err.field()), ("circuit breaker", field));
        assert_eq!(
            err.to_string(),
            format!(
                "invalid circuit breaker configuration: `{field}` {}",
                err.reason()
            )
        );
    }
    assert_eq!(
        b().minimum_calls(0).build().unwrap_err().to_string(),
        "invalid circuit breaker configuration: `minimum_calls` must be at least 1"
    );
}

#[test]
fn the_defaults_are_valid_and_documented() {
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let c = layer.config();
    assert_eq!(c.name, "circuit_breaker");
    assert_eq!(c.mode, Mode::FailFast);
    assert_eq!(c.failure_rate_threshold, Some(0.5));
    assert_eq!(c.minimum_calls, 20);
    assert_eq!(
        c.window,
        watertight_circuit_breaker::Window::Count { size: 100 }
    );
    assert_eq!(c.consecutive_failures, Some(5));
    assert_eq!((c.permitted_probes, c.success_threshold), (1, 1));
    assert_eq!(c.max_half_open_duration, Some(secs(60)));
    assert_eq!(
        (c.open_backoff.base(), c.open_backoff.max()),
        (secs(5), secs(300))
    );
}

// ---- keyed breakers --------------------------------------------------------

mod keyed {
    use super::*;
    use tower_test::mock::Mock;
    use watertight_circuit_breaker::error::TooManyKeys;
    use watertight_circuit_breaker::{KeyedBuilder, KeyedCircuitBreaker};
    use watertight_core::find_cause;

    type KeyFn = fn(&Req) -> Req;
    type Keyed = KeyedCircuitBreaker<Mock<Req, Res>, KeyFn, Req>;

    fn by_request(req: &Req) -> Req {
        req
    }

    fn keyed() -> KeyedBuilder<KeyFn, Req> {
        tripping().keyed(by_request as KeyFn)
    }

    fn spawn_keyed(b: KeyedBuilder<KeyFn, Req>) -> Harness<Keyed> {
        Harness::new(b.build().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_breaker() {
        let mut cb = spawn_keyed(keyed());
        cb.call_with("a", Reply::Err).unwrap_err();
        let err = cb.call_with("a", Reply::Ok).unwrap_err();
        assert_eq!(open(&err).unwrap().state(), State::Open);
        cb.call_with("b", Reply::Ok).unwrap();
        let handle = cb.svc.get_ref().handle();
        assert_eq!(handle.get(&"a").unwrap().state(), State::Open);
        assert_eq!(handle.get(&"b").unwrap().state(), State::Closed);
        let mut keys = handle.keys();
        keys.sort();
        assert_eq!(keys, ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_handles_control_each_key_alone() {
        let mut cb = spawn_keyed(keyed());
        cb.call_with("a", Reply::Ok).unwrap();
        cb.call_with("b", Reply::Ok).unwrap();
        let handle = cb.svc.get_ref().handle();
        assert!(handle.get(&"a").unwrap().force_open());
        let err = cb.call_with("a", Reply::Ok).unwrap_err();
        assert_eq!(open(&err).unwrap().state(), State::ForcedOpen);
        cb.call_with("b", Reply::Ok).unwrap();
        assert!(handle.get(&"c").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_evicted() {
        let mut cb = spawn_keyed(keyed().idle_timeout(secs(60)));
        let handle = cb.svc.get_ref().handle();
        cb.call_with("a", Reply::Ok).unwrap();
        cb.call_with("b", Reply::Err).unwrap_err();
        assert_eq!(handle.get(&"b").unwrap().state(), State::Open);
        advance(secs(30)).await;
        cb.call_with("a", Reply::Ok).unwrap();
        advance(secs(31)).await;
        // `b` has been idle for 61 s, `a` for 31 s.
        cb.call_with("c", Reply::Ok).unwrap();
        let mut keys = handle.keys();
        keys.sort();
        assert_eq!(keys, ["a", "c"]);
        // A new breaker for `b`, closed.
        cb.call_with("b", Reply::Ok).unwrap();
        assert_eq!(handle.get(&"b").unwrap().state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_key_past_the_cap_is_refused_with_too_many_keys() {
        let mut cb = spawn_keyed(keyed().max_keys(2).idle_timeout(secs(60)));
        cb.call_with("a", Reply::Ok).unwrap();
        cb.call_with("b", Reply::Ok).unwrap();
        let err = cb.call_with("c", Reply::Ok).unwrap_err();
        let refused = find_cause::<TooManyKeys>(&*err).expect("typed error");
        assert_eq!(refused.max_keys(), 2);
        assert_eq!(
            err.to_string(),
            "keyed circuit breaker holds its maximum of 2 keys"
        );
        // Known keys still pass.
        cb.call_with("a", Reply::Ok).unwrap();

        advance(secs(60)).await;
        cb.call_with("c", Reply::Ok).unwrap();
        assert_eq!(
            cb.svc.get_ref().handle().len(),
            1,
            "both idle keys made room"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keys_in_a_manual_state_are_never_evicted() {
        let mut cb = spawn_keyed(keyed().max_keys(1).idle_timeout(secs(60)));
        cb.call_with("a", Reply::Ok).unwrap();
        let handle = cb.svc.get_ref().handle();
        handle.get(&"a").unwrap().force_open();
        advance(secs(3600)).await;
        assert_eq!(handle.evict_idle(), 0);
        let err = cb.call_with("b", Reply::Ok).unwrap_err();
        assert!(find_cause::<TooManyKeys>(&*err).is_some());
        handle.get(&"a").unwrap().force_close();
        assert_eq!(handle.evict_idle(), 1);
        cb.call_with("b", Reply::Ok).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_events_name_the_key() {
        let events = Events::default();
        let mut cb = spawn_keyed(
            tripping()
                .on_event(events.listener())
                .keyed(by_request as KeyFn),
        );
        cb.call_with("tenant-7", Reply::Err).unwrap_err();
        let t = events.transitions().pop().unwrap();
        assert_eq!((t.key.as_deref(), t.to), (Some("tenant-7"), State::Open));
    }

    #[test]
    fn invalid_keyed_input_is_a_typed_error_naming_the_field() {
        let cases = [
            (
                "mode",
                tripping()
                    .mode(Mode::Backpressure)
                    .keyed(by_request as KeyFn),
            ),
            ("max_keys", keyed().max_keys(0)),
            ("idle_timeout", keyed().idle_timeout(Duration::ZERO)),
            (
                "minimum_calls",
                tripping().minimum_calls(0).keyed(by_request as KeyFn),
            ),
        ];
        for (field, b) in cases {
            assert_eq!(b.build().unwrap_err().field(), field);
        }
    }
}

// ---- serde configuration ---------------------------------------------------

#[cfg(feature = "serde")]
mod serde_config {
    use super::*;
    use watertight_circuit_breaker::{Config, Window};
    use watertight_core::backoff::BackoffKind;

    #[test]
    fn a_full_toml_configuration_reads_into_config() {
        let c: Config = toml::from_str(
            r#"
            name = "payments"
            mode = "backpressure"
            failure_rate_threshold = 0.25
            minimum_calls = 10
            window = { kind = "time", duration = "60s", buckets = 60 }
            slow_call_duration = "2s"
            slow_call_rate_threshold = 0.8
            consecutive_failures = false
            open_backoff = { kind = "equal_jitter", base = "1s", max = "30s" }
            permitted_probes = 3
            success_threshold = 2
            max_half_open_duration = false
            seed = 42
            "#,
        )
        .unwrap();
        assert_eq!(c.name, "payments");
        assert_eq!(c.mode, Mode::Backpressure);
        assert_eq!(c.failure_rate_threshold, Some(0.25));
        assert_eq!(c.minimum_calls, 10);
        assert_eq!(
            c.window,
            Window::Time {
                duration: secs(60),
                buckets: 60
            }
        );
        assert_eq!(c.slow_call_duration, Some(secs(2)));
        assert_eq!(c.slow_call_rate_threshold, 0.8);
        assert_eq!(c.consecutive_failures, None);
        assert_eq!(
            (
                c.open_backoff.kind(),
                c.open_backoff.base(),
                c.open_backoff.max()
            ),
            (BackoffKind::EqualJitter, secs(1), secs(30))
        );
        assert_eq!((c.permitted_probes, c.success_threshold), (3, 2));
        assert_eq!(c.max_half_open_duration, None);
        assert_eq!(c.seed, Some(42));
        let layer = CircuitBreakerLayer::from_config(c).unwrap();
        assert_eq!(layer.config().name, "payments");
    }

    #[test]
    fn an_empty_toml_configuration_is_the_default() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn open_duration_is_a_constant_backoff() {
        let c: Config = toml::from_str(r#"open_duration = "30s""#).unwrap();
        assert_eq!(
            (c.open_backoff.kind(), c.open_backoff.base()),
            (BackoffKind::Constant, secs(30))
        );
    }

    #[test]
    fn a_configuration_round_trips_through_toml() {
        let mut c = Config::default();
        c.name = "inventory".to_owned();
        c.slow_call_duration = Some(Duration::from_millis(1500));
        c.consecutive_failures = None;
        c.window = Window::Time {
            duration: secs(30),
            buckets: 10,
        };
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn invalid_toml_configuration_is_an_error_naming_the_field() {
        let cases = [
            ("minimum_calls = 0", "`minimum_calls`"),
            ("failure_rate_threshold = 1.5", "`failure_rate_threshold`"),
            ("failure_rate_threshold = true", "failure_rate_threshold"),
            ("slow_call_rate_threshold = 0", "`slow_call_rate_threshold`"),
            ("consecutive_failures = 0", "`consecutive_failures`"),
            ("consecutive_failures = -3", "consecutive_failures"),
            ("permitted_probes = 0", "`permitted_probes`"),
            ("success_threshold = 70000", "`success_threshold`"),
            ("name = \"\"", "`name`"),
            ("mode = \"sometimes\"", "mode"),
            ("window = { kind = \"count\", size = 0 }", "`window.size`"),
            (
                "window = { kind = \"time\", duration = \"0s\", buckets = 10 }",
                "`window.duration`",
            ),
            (
                "window = { kind = \"time\", duration = \"10s\", buckets = 0 }",
                "`window.buckets`",
            ),
            (
                "window = { kind = \"count\", size = 10, buckets = 3 }",
                "buckets",
            ),
            ("slow_call_duration = \"soon\"", "slow_call_duration"),
            ("slow_call_duration = \"0s\"", "`slow_call_duration`"),
            (
                "max_half_open_duration = \"0s\"",
                "`max_half_open_duration`",
            ),
            ("open_duration = \"0s\"", "`open_duration`"),
            (
                "open_duration = \"5s\"\nopen_backoff = { kind = \"constant\", base = \"5s\" }",
                "`open_duration`",
            ),
            (
                "open_backoff = { kind = \"exponential\", base = \"0s\", max = \"1s\" }",
                "`open_backoff.base`",
            ),
            (
                "open_backoff = { kind = \"exponential\", base = \"5s\", max = \"1s\" }",
                "`open_backoff.max`",
            ),
            (
                "open_backoff = { kind = \"exponential\", base = \"5s\" }",
                "`open_backoff.max`",
            ),
            ("minimun_calls = 3", "minimun_calls"),
        ];
        for (text, field) in cases {
            let err = toml::from_str::<Config>(text).expect_err(text).to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }

    #[test]
    fn json_configuration_reads_too() {
        let c: Config =
            serde_json::from_str(r#"{"name": "search", "window": {"kind": "count", "size": 50}}"#)
                .unwrap();
        assert_eq!(
            (c.name.as_str(), c.window),
            ("search", Window::Count { size: 50 })
        );
        let err = serde_json::from_str::<Config>(r#"{"minimum_calls": 0}"#).unwrap_err();
        assert!(err.to_string().contains("`minimum_calls`"), "{err}");
    }
}
