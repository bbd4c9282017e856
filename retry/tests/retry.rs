//! The retry layer, driven through `tower_test::mock` in paused time.

mod support;

use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service};
use tower_test::mock::{self, Mock};
use watertight_core::{find_cause, Attempted, Backoff, BoxError, EndpointId, Extensions, Hint};
use watertight_retry::budget::{Budget, BudgetConfig, RatioBudget};
use watertight_retry::deadline::Deadline;
use watertight_retry::error::{AttemptTimedOut, DeadlineExceeded, Exhausted};
use watertight_retry::event::Event;
use watertight_retry::policy::RetrySafe;
use watertight_retry::{
    is_exhausted, Builder, Config, Reason, RetriesExhausted, RetryLayer, StandardPolicy,
};

use support::*;

fn builder() -> Builder<watertight_retry::budget::AnyBudget, AnyPolicy> {
    RetryLayer::builder().policy(any_policy()).seed(7)
}

fn constant(ms: u64) -> Backoff {
    Backoff::constant(MS * ms as u32).unwrap()
}

fn exhausted(err: &BoxError) -> &Exhausted {
    find_cause::<Exhausted>(&**err).unwrap_or_else(|| panic!("not exhausted: {err}"))
}

/// The mark on a response the layer gave up on: why, and after how many
/// attempts.
fn mark_of(res: &Res) -> Option<(Reason, u32)> {
    res.extension::<RetriesExhausted>()
        .map(|m| (m.reason, m.attempts))
}

/// Sends one request through `layer` to a backend that answers its first
/// attempt with `answer` (`Err` holds an error message), and checks that no
/// other attempt follows.
async fn only_attempt<L>(layer: L, answer: Result<Res, &'static str>) -> Result<Res, BoxError>
where
    L: Layer<Mock<Req, Res>>,
    L::Service: Service<Req, Response = Res, Error = BoxError>,
    <L::Service as Service<Req>>::Future: Send + 'static,
{
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, send) = handle.next_request().await.unwrap();
    match answer {
        Ok(res) => send.send_response(res),
        Err(msg) => send.send_error(msg),
    }
    let result = call.await.unwrap();
    assert_pending!(handle.poll_request());
    result
}

/// The wait between a 503 carrying `hint` and the retry that follows.
async fn retry_gap<L>(layer: L, hint: Hint) -> Duration
where
    L: Layer<Mock<Req, Res>>,
    L::Service: Service<Req, Response = Res, Error = BoxError>,
    <L::Service as Service<Req>>::Future: Send + 'static,
{
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, send) = handle.next_request().await.unwrap();
    let failed = Instant::now();
    send.send_response(Res::status(503).with_hint(hint));
    let (_, send) = handle.next_request().await.unwrap();
    let gap = failed.elapsed();
    send.send_response(Res::ok());
    assert_eq!(call.await.unwrap().unwrap().status, 200);
    gap
}

#[tokio::test(start_paused = true)]
async fn attempts_are_spaced_by_the_backoff() {
    let layer = builder()
        .max_attempts(4)
        .backoff(Backoff::exponential(MS * 100, MS * 1000).unwrap())
        .build()
        .unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let start = Instant::now();
    let call = spawn_call(&mut svc, Req::new(7));
    let mut times = Vec::new();
    for i in 0..4 {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.id, 7);
        times.push(start.elapsed());
        if i < 3 {
            send.send_error("connection reset");
        } else {
            send.send_response(Res::ok());
        }
    }
    assert_eq!(call.await.unwrap().unwrap().status, 200);
    assert_eq!(times, [Duration::ZERO, MS * 100, MS * 300, MS * 700]);
}

#[tokio::test(start_paused = true)]
async fn default_full_jitter_backoff_is_seeded_and_capped() {
    let layer = builder().max_attempts(4).seed(42).build().unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    let mut last = Instant::now();
    let mut gaps = Vec::new();
    for i in 0..4 {
        let (_, send) = handle.next_request().await.unwrap();
        gaps.push(last.elapsed());
        last = Instant::now();
        if i < 3 {
            send.send_response(Res::status(503));
        } else {
            send.send_response(Res::ok());
        }
    }
    call.await.unwrap().unwrap();
    // Full jitter from 25 ms, capped at 250 ms, walked with the same seed.
    let mut expected = Backoff::default().sequence_seeded(42);
    for (n, gap) in gaps[1..].iter().enumerate() {
        let want = expected.next_delay();
        assert!(want < MS * 25 * (1 << n), "retry {n}: {want:?}");
        // The timer wheel rounds up to the millisecond.
        assert!(
            *gap >= want && *gap <= want + MS,
            "retry {n}: {gap:?} vs {want:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn stops_after_max_attempts_with_the_last_error_marked() {
    let events = Events::default();
    let layer = builder()
        .max_attempts(3)
        .backoff(constant(10))
        .on_event(events.listener())
        .build()
        .unwrap();
    let handle_ = layer.handle();
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    for msg in ["first", "second", "third"] {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(msg);
    }
    let err = call.await.unwrap().unwrap_err();
    let e = exhausted(&err);
    assert_eq!(e.reason(), Reason::Attempts);
    assert_eq!(e.attempts(), 3);
    assert_eq!(e.last_error().to_string(), "third");
    assert!(is_exhausted::<Res>(&Err(err)));
    assert_pending!(handle.poll_request());

    let snap = handle_.snapshot();
    assert_eq!((snap.requests, snap.retries, snap.attempts), (1, 2, 3));
    assert_eq!(snap.gave_up(Reason::Attempts), 1);
    let events = events.take();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(&events[0], Event::Retry(r) if r.attempt == 2 && r.delay == MS * 10));
    assert!(matches!(&events[1], Event::Retry(r) if r.attempt == 3));
    assert!(
        matches!(&events[2], Event::GaveUp(g) if g.reason == Reason::Attempts && g.attempts == 3)
    );
}

#[tokio::test(start_paused = true)]
async fn non_retryable_failures_are_returned_unmarked_after_one_attempt() {
    let layer = builder().build().unwrap();
    let res = only_attempt(layer, Ok(Res::status(404))).await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(mark_of(&res), None);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_never_retried() {
    let layer = RetryLayer::builder()
        .policy(marked_policy())
        .backoff(constant(1))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mocked(layer);

    // Not marked: sent once, the failure ends it.
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Res::status(503));
    let res = call.await.unwrap().unwrap();
    assert_eq!(mark_of(&res), Some((Reason::NotIdempotent, 1)));
    assert_pending!(handle.poll_request());

    // Marked safe: retried.
    let mut req = Req::new(2);
    req.insert_extension(RetrySafe);
    let call = spawn_call(&mut svc, req);
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Res::status(503));
    let (again, send) = handle.next_request().await.unwrap();
    assert_eq!(again.id, 2);
    send.send_response(Res::ok());
    assert_eq!(call.await.unwrap().unwrap().status, 200);
}

#[tokio::test(start_paused = true)]
async fn server_retry_after_is_honoured() {
    let layer = builder().backoff(constant(10)).build().unwrap();
    let gap = retry_gap(layer, Hint::RetryAfter(MS * 2000)).await;
    assert_eq!(gap, MS * 2000);
}

#[tokio::test(start_paused = true)]
async fn server_delay_shorter_than_the_backoff_keeps_the_backoff() {
    let layer = builder().backoff(constant(300)).build().unwrap();
    let gap = retry_gap(layer, Hint::RetryAfter(MS * 100)).await;
    assert_eq!(gap, MS * 300);
}

#[tokio::test(start_paused = true)]
async fn server_delay_beyond_the_maximum_gives_up() {
    let layer = builder()
        .max_server_delay(Duration::from_secs(5))
        .build()
        .unwrap();
    let too_long = Res::status(503).with_hint(Hint::RetryAfter(Duration::from_secs(6)));
    let res = only_attempt(layer, Ok(too_long)).await.unwrap();
    assert_eq!(res.status, 503);
    assert_eq!(mark_of(&res), Some((Reason::ServerDelay, 1)));
}

#[tokio::test(start_paused = true)]
async fn do_not_retry_hint_stops_retries() {
    let layer = builder().build().unwrap();
    let stop = Res::status(503).with_hint(Hint::DoNotRetry);
    let res = only_attempt(layer, Ok(stop)).await.unwrap();
    assert_eq!(mark_of(&res), Some((Reason::DoNotRetry, 1)));
}

#[tokio::test(start_paused = true)]
async fn budget_refusal_ends_the_request_with_its_last_error() {
    let budget = ratio_only(0.0);
    let layer = builder().budget(budget).build().unwrap();
    let h = layer.handle();
    let err = only_attempt(layer, Err("refused")).await.unwrap_err();
    let e = exhausted(&err);
    assert_eq!((e.reason(), e.attempts()), (Reason::Budget, 1));
    assert_eq!(e.last_error().to_string(), "refused");
    assert_eq!(h.snapshot().budget_exhausted, 1);
}

/// Two layers of three and two attempts: an exhausted inner result is not
/// retried by the outer layer, so the backend sees two attempts, not six.
#[tokio::test(start_paused = true)]
async fn outer_retry_layer_does_not_retry_what_the_inner_one_gave_up_on() {
    let inner = builder()
        .max_attempts(2)
        .backoff(constant(1))
        .build()
        .unwrap();
    let outer = builder()
        .name("outer")
        .max_attempts(3)
        .backoff(constant(1))
        .build()
        .unwrap();
    let outer_handle = outer.handle();
    let stack = tower::layer::layer_fn(move |s| outer.layer(inner.layer(s)));

    // Errors.
    let (mut svc, mut handle) = mocked(stack.clone());
    let call = spawn_call(&mut svc, Req::new(1));
    for _ in 0..2 {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error("unavailable");
    }
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(exhausted(&err).attempts(), 2);
    // One mark, not an exhausted error wrapping another.
    assert!(find_cause::<Exhausted>(exhausted(&err).last_error()).is_none());
    assert_pending!(handle.poll_request());

    // Responses.
    let call = spawn_call(&mut svc, Req::new(2));
    for _ in 0..2 {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(Res::status(503));
    }
    let res = call.await.unwrap().unwrap();
    assert_eq!(mark_of(&res), Some((Reason::Attempts, 2)));
    assert_pending!(handle.poll_request());
    assert_eq!(outer_handle.snapshot().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn deadline_stops_further_attempts() {
    let layer = builder()
        .max_attempts(10)
        .backoff(constant(100))
        .timeout(MS * 250)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let start = Instant::now();
    let call = spawn_call(&mut svc, Req::new(1));
    for at in [0, 100, 200] {
        let (_, send) = handle.next_request().await.unwrap();
        assert_eq!(start.elapsed(), MS * at);
        send.send_error(format!("failed at {at}"));
    }
    // A fourth attempt would start at 300 ms, past the 250 ms deadline.
    let err = call.await.unwrap().unwrap_err();
    let e = exhausted(&err);
    assert_eq!((e.reason(), e.attempts()), (Reason::Deadline, 3));
    assert_eq!(e.last_error().to_string(), "failed at 200");
    assert_eq!(
        start.elapsed(),
        MS * 200,
        "gave up at once, without waiting"
    );
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_below_the_remaining_time_floor() {
    let layer = builder().min_remaining(MS * 5).build().unwrap();
    let (mut svc, mut handle) = mocked(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut req = Req::new(1);
    req.insert_extension(Deadline::after(MS * 4));
    let err = svc.call(req).await.unwrap_err();
    assert_eq!(exhausted(&err).reason(), Reason::Deadline);
    assert_eq!(exhausted(&err).attempts(), 0);
    assert!(find_cause::<DeadlineExceeded>(&*err).is_some());
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn deadline_ends_an_attempt_in_flight() {
    let layer = builder().timeout(Duration::from_secs(1)).build().unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let start = Instant::now();
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, _hang) = handle.next_request().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(find_cause::<DeadlineExceeded>(&*err).is_some());
    assert_eq!(exhausted(&err).reason(), Reason::Deadline);
}

/// The backend takes one request and no more; the retry waits for it.
#[tokio::test(start_paused = true)]
async fn deadline_ends_a_retry_waiting_for_the_service() {
    let layer = builder()
        .backoff(constant(10))
        .timeout(MS * 500)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer);
    handle.allow(1);
    let start = Instant::now();
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("reset");
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), MS * 500);
    let e = exhausted(&err);
    assert_eq!((e.reason(), e.attempts()), (Reason::Deadline, 1));
    assert!(find_cause::<DeadlineExceeded>(&*err).is_some());
    assert_pending!(handle.poll_request());
}

/// The service becomes ready with less than `min_remaining` left: the retry
/// is not sent.
#[tokio::test(start_paused = true)]
async fn a_retry_ready_below_the_remaining_time_floor_is_not_sent() {
    let layer = builder()
        .backoff(constant(10))
        .timeout(MS * 500)
        .min_remaining(MS * 5)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer);
    handle.allow(1);
    let start = Instant::now();
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("reset");
    tokio::time::sleep(MS * 497).await;
    handle.allow(1);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), MS * 497);
    assert_eq!(exhausted(&err).reason(), Reason::Deadline);
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_fires_and_the_attempt_is_retried() {
    let layer = builder()
        .per_try_timeout(MS * 100)
        .backoff(constant(10))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let start = Instant::now();
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, _hang) = handle.next_request().await.unwrap();
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(start.elapsed(), MS * 110);
    send.send_response(Res::ok());
    assert_eq!(call.await.unwrap().unwrap().status, 200);
}

#[tokio::test(start_paused = true)]
async fn attempts_that_all_time_out_end_with_attempt_timed_out() {
    let layer = builder()
        .max_attempts(2)
        .per_try_timeout(MS * 50)
        .backoff(constant(1))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, _a) = handle.next_request().await.unwrap();
    let (_, _b) = handle.next_request().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(exhausted(&err).reason(), Reason::Attempts);
    let timed_out = find_cause::<AttemptTimedOut>(&*err).expect("the last error");
    assert_eq!(timed_out.after(), MS * 50);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_its_own_deadline() {
    let layer = builder()
        .timeout(Duration::from_secs(1))
        .per_try_timeout(MS * 100)
        .backoff(constant(10))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let start = Instant::now();
    let call = spawn_call(&mut svc, Req::new(1));
    let (first, send) = handle.next_request().await.unwrap();
    assert_eq!(
        first.extension::<Deadline>(),
        Some(&Deadline::at(start + MS * 100))
    );
    send.send_error("reset");
    let (second, send) = handle.next_request().await.unwrap();
    assert_eq!(
        second.extension::<Deadline>(),
        Some(&Deadline::at(start + MS * 10 + MS * 100))
    );
    send.send_response(Res::ok());
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_earlier_request_deadline_wins_over_the_layer_timeout() {
    let layer = builder().timeout(Duration::from_secs(10)).build().unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let start = Instant::now();
    let mut req = Req::new(1);
    req.insert_extension(Deadline::after(MS * 300));
    let call = spawn_call(&mut svc, req);
    let (got, _hang) = handle.next_request().await.unwrap();
    assert_eq!(
        got.extension::<Deadline>(),
        Some(&Deadline::at(start + MS * 300))
    );
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), MS * 300);
    assert_eq!(exhausted(&err).reason(), Reason::Deadline);
}

#[tokio::test(start_paused = true)]
async fn all_attempts_of_a_request_share_one_attempted() {
    let layer = builder().backoff(constant(1)).build().unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    let (first, send) = handle.next_request().await.unwrap();
    // What a balancer does with the note.
    first
        .extension::<Attempted>()
        .expect("the retry layer puts one on the request")
        .record(EndpointId::from("10.0.0.1:80"));
    send.send_error("reset");
    let (second, send) = handle.next_request().await.unwrap();
    let attempted = second.extension::<Attempted>().unwrap();
    assert!(attempted.contains("10.0.0.1:80"));
    send.send_response(Res::ok());
    call.await.unwrap().unwrap();

    // A new request gets a fresh one.
    let call = spawn_call(&mut svc, Req::new(2));
    let (third, send) = handle.next_request().await.unwrap();
    assert!(third.extension::<Attempted>().unwrap().is_empty());
    send.send_response(Res::ok());
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn disabling_through_the_handle_stops_retries() {
    let layer = builder().backoff(constant(1)).build().unwrap();
    let h = layer.handle();
    assert!(h.disable());
    assert!(!h.disable());
    let err = only_attempt(layer, Err("reset")).await.unwrap_err();
    assert_eq!(exhausted(&err).reason(), Reason::Disabled);
    assert!(h.enable());
    assert!(h.snapshot().enabled);
}

/// One budget for every service of a layer: a deposit made through one
/// service pays for a retry through another.
#[tokio::test(start_paused = true)]
async fn every_service_of_a_layer_shares_its_budget() {
    let layer = builder()
        .budget_config(BudgetConfig::Ratio {
            ratio: 0.5,
            min_per_sec: 0,
            ttl: Duration::from_secs(10),
        })
        .backoff(constant(1))
        .build()
        .unwrap();
    let (mut a, mut ha) = mocked(layer.clone());
    let (mut b, mut hb) = mocked(layer.clone());

    let call = spawn_call(&mut a, Req::new(1));
    let (_, send) = ha.next_request().await.unwrap();
    send.send_response(Res::ok());
    call.await.unwrap().unwrap();

    let call = spawn_call(&mut b, Req::new(2));
    let (_, send) = hb.next_request().await.unwrap();
    send.send_error("first");
    // Two half-deposits make one retry.
    let (_, send) = hb.next_request().await.unwrap();
    send.send_error("second");
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(exhausted(&err).reason(), Reason::Budget);
    assert_eq!(layer.handle().snapshot().requests, 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_gives_back_what_it_took_from_the_budget() {
    let budget = one_retry_at_a_time();
    let layer = builder()
        .shared_budget(budget.clone())
        .backoff(constant(1000))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(budget.active_requests(), 1);
    send.send_error("reset");
    // The retry waits out its backoff holding the budget's only slot.
    tokio::time::sleep(MS * 10).await;
    assert_eq!(budget.active_retries(), 1);
    assert_eq!(budget.remaining(), 0);
    call.abort();
    let _ = call.await;
    assert_eq!(budget.active_retries(), 0);
    assert_eq!(budget.active_requests(), 0);
    assert_eq!(budget.remaining(), 1);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_requests_attempts_retries_and_budget_exhaustion() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || {
        builder()
            .name("orders")
            .backoff(constant(1))
            .budget_config(BudgetConfig::Ratio {
                ratio: 0.0,
                min_per_sec: 1,
                ttl: Duration::from_secs(1),
            })
            .build()
            .unwrap()
    });
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    // One retry from the reserve (1/s over 1 s), then the budget is empty.
    for _ in 0..2 {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error("down");
    }
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(exhausted(&err).reason(), Reason::Budget);

    let m = Recorded::now(&snapshotter);
    let orders = [("name", "orders")];
    assert_eq!(m.counter("watertight_retry_requests_total", &orders), 1);
    assert_eq!(m.counter("watertight_retry_attempts_total", &orders), 2);
    assert_eq!(m.counter("watertight_retry_retries_total", &orders), 1);
    assert_eq!(
        m.counter("watertight_retry_budget_exhausted_total", &orders),
        1
    );
    assert_eq!(
        m.counter(
            "watertight_retry_gave_up_total",
            &[("name", "orders"), ("reason", "budget")]
        ),
        1
    );
    assert_eq!(m.gauge("watertight_retry_budget_remaining", &orders), 0.0);
}

#[test]
fn invalid_configuration_names_the_field() {
    let field = |b: Builder| b.build().unwrap_err().field().to_owned();
    assert_eq!(field(RetryLayer::builder().max_attempts(0)), "max_attempts");
    assert_eq!(
        field(RetryLayer::builder().max_attempts(101)),
        "max_attempts"
    );
    assert_eq!(field(RetryLayer::builder().name("")), "name");
    assert_eq!(
        field(RetryLayer::builder().timeout(Duration::ZERO)),
        "timeout"
    );
    assert_eq!(
        field(RetryLayer::builder().timeout(MS * 5).min_remaining(MS * 5)),
        "min_remaining"
    );
    assert_eq!(
        field(RetryLayer::builder().per_try_timeout(Duration::ZERO)),
        "per_try_timeout"
    );
    let bad_ratio = RetryLayer::builder().budget_config(BudgetConfig::Ratio {
        ratio: -0.1,
        min_per_sec: 10,
        ttl: Duration::from_secs(10),
    });
    let err = bad_ratio.build().unwrap_err();
    assert_eq!(err.field(), "budget.ratio");
    assert_eq!(err.component(), "retry");
    assert_eq!(
        err.to_string(),
        "invalid retry configuration: `budget.ratio` must be in 0..=1000, got -0.1"
    );
    let bad_ttl = RetryLayer::builder().budget_config(BudgetConfig::Ratio {
        ratio: 0.2,
        min_per_sec: 10,
        ttl: Duration::from_millis(500),
    });
    assert_eq!(field(bad_ttl), "budget.ttl");
    assert_eq!(
        RatioBudget::builder()
            .ratio(f64::NAN)
            .build()
            .unwrap_err()
            .field(),
        "ratio"
    );
}

#[test]
fn defaults_match_the_documented_anchors() {
    let c = Config::default();
    assert_eq!(c.max_attempts, 3);
    assert_eq!(c.backoff, Backoff::full_jitter(MS * 25, MS * 250).unwrap());
    assert_eq!(c.max_server_delay, Duration::from_secs(300));
    assert_eq!(
        c.budget,
        BudgetConfig::Ratio {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10)
        }
    );
    let layer = RetryLayer::new();
    assert_eq!(layer.config(), &c);
    let _: &StandardPolicy = layer.policy();
}

#[cfg(feature = "serde")]
#[test]
fn config_reads_from_toml_and_names_bad_fields() {
    let c: Config = toml::from_str(
        r#"
        name = "payments"
        max_attempts = 4
        backoff = { kind = "exponential", base = "10ms", max = "1s" }
        timeout = "2s"
        per_try_timeout = "500ms"
        budget = { kind = "concurrency", ratio = 0.25 }
        seed = 3
        "#,
    )
    .unwrap();
    assert_eq!(c.name, "payments");
    assert_eq!(c.max_attempts, 4);
    assert_eq!(c.timeout, Some(Duration::from_secs(2)));
    assert_eq!(c.per_try_timeout, Some(MS * 500));
    assert_eq!(
        c.budget,
        BudgetConfig::Concurrency {
            ratio: 0.25,
            min_concurrency: 3
        }
    );
    let layer = RetryLayer::from_config(c.clone()).unwrap();
    assert_eq!(layer.config(), &c);
    assert_eq!(layer.budget().remaining(), 3);

    let err = toml::from_str::<Config>("max_attempts = 0").unwrap_err();
    assert!(err.to_string().contains("`max_attempts`"), "{err}");
    let err =
        toml::from_str::<Config>("budget = { kind = \"grpc\", max_tokens = 0, token_ratio = 0.1 }")
            .unwrap_err();
    assert!(err.to_string().contains("`budget.max_tokens`"), "{err}");
    let err = toml::from_str::<Config>("max_atempts = 2").unwrap_err();
    assert!(err.to_string().contains("max_atempts"), "{err}");

    // Round trip.
    let back: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

/// A request type that is not `Clone`, copied by a strategy.
#[derive(Debug)]
struct Upload {
    bytes: Vec<u8>,
}

impl Extensions for Upload {}

#[tokio::test(start_paused = true)]
async fn requests_that_are_not_clone_are_copied_by_a_clone_request_strategy() {
    use watertight_retry::policy::{clone_fn, AllRequests};

    let layer = RetryLayer::builder()
        .classify(classifier())
        .idempotency(AllRequests)
        .hints(hints())
        .clone_request(clone_fn(|u: &Upload| {
            // Only small uploads are kept for a retry.
            (u.bytes.len() <= 4).then(|| Upload {
                bytes: u.bytes.clone(),
            })
        }))
        .backoff(constant(1))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Upload, Res, _>(layer);
    handle.allow(100);

    let call = spawn_call(&mut svc, Upload { bytes: vec![1, 2] });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Res::status(503));
    let (again, send) = handle.next_request().await.unwrap();
    assert_eq!(again.bytes, [1, 2]);
    send.send_response(Res::ok());
    assert_eq!(call.await.unwrap().unwrap().status, 200);

    let call = spawn_call(&mut svc, Upload { bytes: vec![0; 64] });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Res::status(503));
    let res = call.await.unwrap().unwrap();
    assert_eq!(mark_of(&res), Some((Reason::NotReplayable, 1)));
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn one_attempt_means_no_retries_and_says_so() {
    let layer = builder().max_attempts(1).build().unwrap();
    let err = only_attempt(layer, Err("reset")).await.unwrap_err();
    assert_eq!(exhausted(&err).reason(), Reason::Attempts);
}
