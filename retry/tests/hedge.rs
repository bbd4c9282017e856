//! The hedging layer, in paused time, over a scripted backend that records
//! every call and every cancelled one.

mod support;

use std::future::pending;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use metrics_util::debugging::DebuggingRecorder;
use parking_lot::Mutex;
use tokio::time::{sleep, Instant};
use tokio_test::assert_pending;
use tower::{Layer, Service, ServiceExt};
use watertight_core::{Attempted, BoxError, EndpointId, Extensions};
use watertight_retry::budget::{Budget, BudgetConfig, RatioBudget};
use watertight_retry::event::Event;
use watertight_retry::hedge::{HedgeBuilder, HedgeConfig, HedgeDelay, HedgeLayer};

use support::*;

/// What the backend does with the `n`-th call (0-based) of a request.
#[derive(Clone, Copy, Debug)]
enum Act {
    After(Duration, u16),
    FailAfter(Duration),
    Hang,
}

type Script = Arc<dyn Fn(u32, usize) -> Act + Send + Sync>;

#[derive(Clone)]
struct Backend {
    script: Script,
    /// (request id, call index, when)
    calls: Arc<Mutex<Vec<(u32, usize, Instant)>>>,
    /// (request id, call index) of calls dropped before they answered.
    cancelled: Arc<Mutex<Vec<(u32, usize)>>>,
    /// Every request seen, for its extensions.
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Backend {
    fn new(script: impl Fn(u32, usize) -> Act + Send + Sync + 'static) -> Self {
        Backend {
            script: Arc::new(script),
            calls: Arc::default(),
            cancelled: Arc::default(),
            seen: Arc::default(),
        }
    }

    fn calls_of(&self, id: u32) -> Vec<Duration> {
        let calls = self.calls.lock();
        let first = calls.iter().find(|c| c.0 == id).map(|c| c.2);
        calls
            .iter()
            .filter(|c| c.0 == id)
            .map(|c| c.2 - first.unwrap())
            .collect()
    }
}

struct Guard {
    key: (u32, usize),
    cancelled: Arc<Mutex<Vec<(u32, usize)>>>,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.lock().push(self.key);
        }
    }
}

impl Service<Req> for Backend {
    type Response = Res;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Res, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let id = req.id;
        let n = {
            let mut calls = self.calls.lock();
            let n = calls.iter().filter(|c| c.0 == id).count();
            calls.push((id, n, Instant::now()));
            n
        };
        self.seen.lock().push(req);
        let act = (self.script)(id, n);
        let guard = Guard {
            key: (id, n),
            cancelled: self.cancelled.clone(),
            done: false,
        };
        Box::pin(async move {
            // Owned by the future: dropped with it.
            let mut guard = guard;
            let out = match act {
                Act::After(d, status) => {
                    sleep(d).await;
                    Ok(Res::status(status))
                }
                Act::FailAfter(d) => {
                    sleep(d).await;
                    Err(format!("attempt {n} failed").into())
                }
                Act::Hang => pending().await,
            };
            guard.done = true;
            out
        })
    }
}

fn builder() -> HedgeBuilder<watertight_retry::budget::AnyBudget, AnyPolicy> {
    HedgeLayer::builder().policy(any_policy())
}

fn generous() -> RatioBudget {
    RatioBudget::builder()
        .ratio(1.0)
        .min_per_sec(1000)
        .build()
        .unwrap()
}

async fn send<S>(svc: &mut S, id: u32) -> Result<Res, BoxError>
where
    S: Service<Req, Response = Res, Error = BoxError>,
{
    svc.ready().await?.call(Req::new(id)).await
}

#[tokio::test(start_paused = true)]
async fn hedge_fires_at_the_95th_percentile_of_recent_latencies() {
    // Requests 1..=100 take 1..=100 ms; request 1000 hangs at first.
    let backend = Backend::new(|id, n| match (id, n) {
        (1000, 0) => Act::Hang,
        (1000, _) => Act::After(MS * 5, 200),
        (id, _) => Act::After(MS * id, 200),
    });
    let layer = builder()
        .delay(HedgeDelay::Percentile {
            max_extra_load: 0.05,
            min_delay: MS,
            max_latency: Duration::from_secs(30),
            min_samples: 100,
            period: Duration::from_secs(60),
        })
        .budget(generous())
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(backend.clone());
    for id in 1..=100 {
        send(&mut svc, id).await.unwrap();
    }
    assert_eq!(h.snapshot().hedges_sent, 0, "no hedge before 100 samples");
    let delay = h
        .snapshot()
        .delay
        .expect("a percentile once 100 samples are in");
    // p95 of 1..=100 ms is 95 ms, within the histogram's 1% resolution.
    assert!(delay >= MS * 95 && delay < MS * 96, "{delay:?}");

    let res = send(&mut svc, 1000).await.unwrap();
    assert_eq!(res.status, 200);
    let calls = backend.calls_of(1000);
    assert_eq!(calls.len(), 2);
    // The timer wheel rounds up to the millisecond.
    assert!(calls[1] >= delay && calls[1] <= delay + MS, "{calls:?}");
    let snap = h.snapshot();
    assert_eq!((snap.hedges_sent, snap.hedges_won), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn first_success_wins_and_the_loser_is_cancelled() {
    let events = Events::default();
    // The original hangs; the hedge answers 10 ms after it is sent.
    let backend = Backend::new(|_, n| match n {
        0 => Act::Hang,
        _ => Act::After(MS * 10, 200),
    });
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 50))
        .budget(generous())
        .on_event(events.listener())
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let start = Instant::now();
    let res = send(&mut svc, 1).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(start.elapsed(), MS * 60);
    assert_eq!(
        *backend.cancelled.lock(),
        [(1, 0)],
        "the original is dropped"
    );
    assert_eq!(h.snapshot().hedges_won, 1);
    let events = events.take();
    assert!(
        matches!(&events[..], [Event::HedgeSent(s), Event::HedgeWon(w)] if s.attempt == 2 && w.attempt == 2)
    );
}

#[tokio::test(start_paused = true)]
async fn the_original_can_win_and_then_the_hedge_is_cancelled() {
    let backend = Backend::new(|_, n| match n {
        0 => Act::After(MS * 70, 200),
        _ => Act::After(MS * 100, 200),
    });
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 50))
        .budget(generous())
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(backend.clone());
    let start = Instant::now();
    send(&mut svc, 1).await.unwrap();
    assert_eq!(start.elapsed(), MS * 70);
    assert_eq!(backend.calls_of(1), [Duration::ZERO, MS * 50]);
    assert_eq!(*backend.cancelled.lock(), [(1, 1)]);
    let snap = h.snapshot();
    assert_eq!((snap.hedges_sent, snap.hedges_won), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_waits_for_the_others_and_all_failing_returns_the_last() {
    // The original fails after the hedge went out; the hedge succeeds.
    let backend = Backend::new(|id, n| match (id, n) {
        (1, 0) => Act::FailAfter(MS * 60),
        (1, _) => Act::After(MS * 30, 200),
        (_, 0) => Act::FailAfter(MS * 60),
        (_, _) => Act::FailAfter(MS * 30),
    });
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 50))
        .budget(generous())
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    let start = Instant::now();
    assert_eq!(send(&mut svc, 1).await.unwrap().status, 200);
    assert_eq!(start.elapsed(), MS * 80);

    let err = send(&mut svc, 2).await.unwrap_err();
    assert_eq!(err.to_string(), "attempt 1 failed", "the last to fail");
}

#[tokio::test(start_paused = true)]
async fn no_hedge_for_non_idempotent_requests() {
    let backend = Backend::new(|_, _| Act::After(MS * 500, 200));
    let layer = HedgeLayer::builder()
        .policy(marked_policy())
        .delay(HedgeDelay::fixed(MS * 10))
        .budget(generous())
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(backend.clone());
    send(&mut svc, 1).await.unwrap();
    assert_eq!(backend.calls_of(1).len(), 1);
    assert_eq!(h.snapshot().hedges_sent, 0);

    // Marked safe, the same request is hedged.
    let mut req = Req::new(2);
    req.insert_extension(watertight_retry::policy::RetrySafe);
    svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(backend.calls_of(2), [Duration::ZERO, MS * 10]);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_until_the_histogram_has_enough_samples() {
    let backend = Backend::new(|_, _| Act::After(MS * 200, 200));
    let layer = builder().budget(generous()).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(backend.clone());
    for id in 0..19 {
        send(&mut svc, id).await.unwrap();
    }
    assert_eq!(h.snapshot().delay, None);
    assert_eq!(h.snapshot().hedges_sent, 0);
    // The 20th sample starts hedging without waiting for a full period.
    send(&mut svc, 19).await.unwrap();
    assert_eq!(h.snapshot().delay.map(|d| d.as_millis()), Some(200));
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_percentile_is_at_the_histogram_top_and_a_1ms_floor() {
    let slow = Backend::new(|_, _| Act::After(MS * 300, 200));
    let layer = builder()
        .delay(HedgeDelay::Percentile {
            max_extra_load: 0.05,
            min_delay: MS,
            max_latency: MS * 100,
            min_samples: 20,
            period: Duration::from_secs(10),
        })
        .budget(generous())
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(slow.clone());
    for id in 0..40 {
        send(&mut svc, id).await.unwrap();
    }
    assert_eq!(h.snapshot().delay, None);
    assert_eq!(h.snapshot().hedges_sent, 0);

    let instant = Backend::new(|_, _| Act::After(Duration::ZERO, 200));
    let layer = builder().budget(generous()).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(instant);
    for id in 0..20 {
        send(&mut svc, id).await.unwrap();
    }
    assert_eq!(h.snapshot().delay, Some(MS));
}

#[tokio::test(start_paused = true)]
async fn hedges_withdraw_from_the_budget() {
    let events = Events::default();
    let backend = Backend::new(|_, _| Act::After(MS * 100, 200));
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 10))
        .budget(ratio_only(0.5))
        .on_event(events.listener())
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(backend.clone());
    // Request 1 deposits half a hedge: refused. Request 2 makes it whole.
    send(&mut svc, 1).await.unwrap();
    send(&mut svc, 2).await.unwrap();
    send(&mut svc, 3).await.unwrap();
    assert_eq!(backend.calls_of(1).len(), 1);
    assert_eq!(backend.calls_of(2).len(), 2);
    assert_eq!(backend.calls_of(3).len(), 1);
    let snap = h.snapshot();
    assert_eq!((snap.hedges_sent, snap.budget_exhausted), (1, 2));
    assert!(events
        .take()
        .iter()
        .any(|e| matches!(e, Event::HedgeRefused(r) if r.attempt == 2)));
}

#[tokio::test(start_paused = true)]
async fn max_hedged_attempts_bounds_the_hedges() {
    let backend = Backend::new(|_, n| match n {
        0 => Act::After(MS * 1000, 200),
        _ => Act::Hang,
    });
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 10))
        .max_hedged_attempts(3)
        .budget(generous())
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    send(&mut svc, 1).await.unwrap();
    assert_eq!(
        backend.calls_of(1),
        [Duration::ZERO, MS * 10, MS * 20, MS * 30]
    );
    let mut cancelled = backend.cancelled.lock().clone();
    cancelled.sort();
    assert_eq!(cancelled, [(1, 1), (1, 2), (1, 3)]);
}

#[tokio::test(start_paused = true)]
async fn hedges_share_the_requests_attempted() {
    let backend = Backend::new(|_, n| match n {
        0 => Act::Hang,
        _ => Act::After(MS, 200),
    });
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 10))
        .budget(generous())
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    send(&mut svc, 1).await.unwrap();
    let seen = backend.seen.lock();
    let first = seen[0].extension::<Attempted>().unwrap();
    first.record(EndpointId::from("a"));
    assert!(seen[1].extension::<Attempted>().unwrap().contains("a"));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_hedged_request_gives_back_its_budget() {
    let budget = one_retry_at_a_time();
    let backend = Backend::new(|_, _| Act::Hang);
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 10))
        .shared_budget(budget.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());
    svc.ready().await.unwrap();
    let call = tokio::spawn(svc.call(Req::new(1)));
    sleep(MS * 20).await;
    assert_eq!(backend.calls_of(1).len(), 2);
    assert_eq!((budget.active_requests(), budget.active_retries()), (1, 1));
    call.abort();
    let _ = call.await;
    assert_eq!((budget.active_requests(), budget.active_retries()), (0, 0));
    assert_eq!(budget.remaining(), 1);
    assert_eq!(backend.cancelled.lock().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_the_service_cannot_take_is_not_sent_and_gives_back_its_budget() {
    let budget = one_retry_at_a_time();
    let layer = builder()
        .delay(HedgeDelay::fixed(MS * 10))
        .shared_budget(budget.clone())
        .build()
        .unwrap();
    let h = layer.handle();
    let (mut svc, mut handle) = mocked(layer);
    let call = spawn_call(&mut svc, Req::new(1));
    let (_, send) = handle.next_request().await.unwrap();
    // The hedge is due at 10 ms; the service fails to become ready for it.
    handle.send_error("no capacity");
    sleep(MS * 20).await;
    assert_eq!(budget.active_retries(), 0);
    assert_eq!(h.snapshot().hedges_sent, 0);
    // The original still answers.
    send.send_response(Res::ok());
    assert_eq!(call.await.unwrap().unwrap().status, 200);
    assert_pending!(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn metrics_count_requests_hedges_sent_won_and_refused() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Originals answer after 100 ms, hedges 10 ms after they are sent.
    let backend = Backend::new(|_, n| match n {
        0 => Act::After(MS * 100, 200),
        _ => Act::After(MS * 10, 200),
    });
    let layer = metrics::with_local_recorder(&recorder, || {
        builder()
            .name("search")
            .delay(HedgeDelay::fixed(MS * 50))
            .budget_config(BudgetConfig::Ratio {
                ratio: 0.5,
                min_per_sec: 0,
                ttl: Duration::from_secs(10),
            })
            .build()
            .unwrap()
    });
    let mut svc = layer.layer(backend);
    // Half a hedge in the budget: refused. A whole one: sent, and it wins.
    send(&mut svc, 1).await.unwrap();
    send(&mut svc, 2).await.unwrap();

    let m = Recorded::now(&snapshotter);
    let search = [("name", "search")];
    assert_eq!(m.counter("watertight_hedge_requests_total", &search), 2);
    assert_eq!(m.counter("watertight_hedge_sent_total", &search), 1);
    assert_eq!(m.counter("watertight_hedge_won_total", &search), 1);
    assert_eq!(
        m.counter("watertight_hedge_budget_exhausted_total", &search),
        1
    );
    assert_eq!(m.gauge("watertight_hedge_delay_seconds", &search), 0.05);
    assert_eq!(m.gauge("watertight_retry_budget_remaining", &search), 0.0);
}

#[test]
fn invalid_hedge_configuration_names_the_field() {
    let field = |b: HedgeBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(field(HedgeLayer::builder().name("")), "name");
    assert_eq!(
        field(HedgeLayer::builder().max_hedged_attempts(0)),
        "max_hedged_attempts"
    );
    assert_eq!(
        HedgeLayer::builder()
            .max_hedged_attempts(11)
            .build()
            .unwrap_err()
            .to_string(),
        "invalid retry configuration: `max_hedged_attempts` must be in 1..=10, got 11"
    );
    assert_eq!(
        field(HedgeLayer::builder().delay(HedgeDelay::percentile(1.0))),
        "delay.max_extra_load"
    );
    assert_eq!(
        field(HedgeLayer::builder().delay(HedgeDelay::fixed(Duration::ZERO))),
        "delay.delay"
    );
    let d = HedgeConfig::default();
    assert_eq!(d.max_hedged_attempts, 1);
    assert_eq!(d.delay, HedgeDelay::percentile(0.05));
    // The default budget holds hedges to the extra load.
    let layer = HedgeLayer::new();
    assert_eq!(
        layer.budget().remaining(),
        100,
        "10/s over 10 s before any request"
    );
}

#[cfg(feature = "serde")]
#[test]
fn hedge_config_reads_from_toml() {
    let c: HedgeConfig = toml::from_str(
        r#"
        name = "search"
        delay = { kind = "fixed", delay = "40ms" }
        max_hedged_attempts = 2
        budget = { kind = "ratio", ratio = 0.1 }
        "#,
    )
    .unwrap();
    assert_eq!(c.delay, HedgeDelay::fixed(MS * 40));
    assert_eq!(c.max_hedged_attempts, 2);
    HedgeLayer::from_config(c).unwrap();
    let err =
        toml::from_str::<HedgeConfig>("delay = { kind = \"percentile\", max_extra_load = 2.0 }")
            .unwrap_err();
    assert!(err.to_string().contains("`delay.max_extra_load`"), "{err}");
}
