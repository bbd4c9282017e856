//! Bulkhead: the static limit, its queue, modes, resizing and observability.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{service_fn, Layer, Service, ServiceExt};
use watertight_bulkhead::error::{Full, Reason};
use watertight_bulkhead::event::{Cause, Event};
use watertight_bulkhead::{Bulkhead, BulkheadBuilder, BulkheadConfig, BulkheadLayer, Mode, Order};
use watertight_core::{find_cause, BoxError};

use support::{Manual, Recorder};

fn bulkhead(builder: BulkheadBuilder) -> (Bulkhead<Manual>, Manual) {
    let backend = Manual::default();
    (builder.build().unwrap().layer(backend.clone()), backend)
}

/// One permit, and a queue of `max_queue` requests waiting up to `max_wait`.
fn one_permit_and_a_queue(max_queue: u32, max_wait: Duration) -> BulkheadBuilder {
    BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(max_queue)
        .max_wait(max_wait)
}

fn full(err: &BoxError) -> &Full {
    find_cause::<Full>(&**err).unwrap_or_else(|| panic!("not a rejection: {err}"))
}

/// Starts request `id` on a task of its own (through a clone, as a server
/// does per request) and lets it run until it waits.
async fn start(svc: &Bulkhead<Manual>, id: u32) -> Task {
    let svc = svc.clone();
    let task = tokio::spawn(svc.oneshot(id));
    settle().await;
    task
}

/// Lets the spawned tasks run until they wait.
async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

type Task = tokio::task::JoinHandle<Result<u32, BoxError>>;

/// Starts request 0, which takes the only permit, then requests `1..=n`,
/// which queue in that order.
async fn hold_and_queue(svc: &Bulkhead<Manual>, n: u32) -> (Task, Vec<Task>) {
    let holder = start(svc, 0).await;
    let mut queued = Vec::new();
    for id in 1..=n {
        queued.push(start(svc, id).await);
        assert_eq!(svc.handle().queued(), id);
    }
    (holder, queued)
}

#[tokio::test(start_paused = true)]
async fn rejects_at_once_with_full_when_every_permit_is_taken_and_there_is_no_queue() {
    let (mut svc, backend) = bulkhead(BulkheadLayer::builder().max_concurrent(2));
    let _a = svc.ready().await.unwrap().call(1);
    let _b = svc.ready().await.unwrap().call(2);
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    let f = full(&err);
    assert_eq!(
        (f.reason(), f.limit(), f.waited()),
        (Reason::AtLimit, 2, Duration::ZERO)
    );
    assert_eq!(f.retry_after(), Duration::from_secs(1));
    assert_eq!(err.to_string(), "bulkhead is full (2 in flight)");
    assert_eq!(
        backend.seen(),
        [1, 2],
        "the rejected call never reached the backend"
    );
    let snap = svc.handle().snapshot();
    assert_eq!((snap.admitted, snap.rejected, snap.in_flight), (2, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn completed_and_cancelled_calls_give_their_permits_back() {
    let (mut svc, backend) = bulkhead(BulkheadLayer::builder().max_concurrent(1));
    let handle = svc.handle();
    let a = svc.ready().await.unwrap().call(1);
    backend.answer(1, false);
    assert_eq!(a.await.unwrap(), 1);
    assert_eq!(handle.in_flight(), 0);

    // A cancelled call (its future dropped mid-flight) leaks nothing.
    let b = svc.ready().await.unwrap().call(2);
    assert_eq!(handle.in_flight(), 1);
    drop(b);
    assert_eq!(handle.in_flight(), 0);
    let _c = svc.ready().await.unwrap().call(3);
    assert_eq!(handle.in_flight(), 1);

    // So does a failed one.
    let (mut svc, backend) = bulkhead(BulkheadLayer::builder().max_concurrent(1));
    let d = svc.ready().await.unwrap().call(4);
    backend.answer(4, true);
    assert!(d.await.is_err());
    assert_eq!(svc.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn queued_request_is_rejected_after_max_wait() {
    let (svc, backend) = bulkhead(one_permit_and_a_queue(1, Duration::from_millis(100)));
    let first = start(&svc, 1).await;
    let queued = start(&svc, 2).await;
    assert_eq!(svc.handle().queued(), 1);
    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(!queued.is_finished(), "still within max_wait");
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = queued.await.unwrap().unwrap_err();
    let f = full(&err);
    assert_eq!(f.reason(), Reason::WaitElapsed);
    assert_eq!(f.waited(), Duration::from_millis(100));
    assert_eq!(svc.handle().queued(), 0);
    assert_eq!(svc.handle().snapshot().timed_out, 1);
    assert_eq!(backend.seen(), [1]);
    backend.answer(1, false);
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn queued_request_runs_when_a_permit_returns_within_max_wait() {
    let (svc, backend) = bulkhead(one_permit_and_a_queue(1, Duration::from_millis(100)));
    let first = start(&svc, 1).await;
    let queued = start(&svc, 2).await;
    tokio::time::advance(Duration::from_millis(60)).await;
    backend.answer(1, false);
    first.await.unwrap().unwrap();
    tokio::task::yield_now().await;
    assert_eq!(backend.seen(), [1, 2]);
    backend.answer(2, false);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn full_queue_rejects_at_once() {
    let (svc, _backend) = bulkhead(one_permit_and_a_queue(1, Duration::from_secs(1)));
    let _first = start(&svc, 1).await;
    let _queued = start(&svc, 2).await;
    let third = start(&svc, 3).await;
    let err = third.await.unwrap().unwrap_err();
    assert_eq!(full(&err).reason(), Reason::QueueFull);
    assert_eq!(full(&err).waited(), Duration::ZERO);
}

/// Holds one permit, queues requests 1, 2, 3 in that order, then lets them
/// through one at a time; returns the order they reached the backend in.
async fn serve_order(order: Order) -> Vec<u32> {
    let (svc, backend) = bulkhead(one_permit_and_a_queue(3, Duration::from_secs(60)).order(order));
    let (holder, waiting) = hold_and_queue(&svc, 3).await;
    backend.answer(0, false);
    holder.await.unwrap().unwrap();
    for _ in 1..=3 {
        settle().await;
        backend.answer_oldest();
    }
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    backend.seen()[1..].to_vec()
}

#[tokio::test(start_paused = true)]
async fn fifo_queue_serves_the_oldest_waiter_first() {
    assert_eq!(serve_order(Order::Fifo).await, [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn lifo_queue_serves_the_newest_waiter_first() {
    assert_eq!(serve_order(Order::Lifo).await, [3, 2, 1]);
}

#[tokio::test(start_paused = true)]
async fn backpressure_is_pending_until_a_permit_returns_and_wakes_exactly_then() {
    let (mut svc, backend) = bulkhead(
        BulkheadLayer::builder()
            .max_concurrent(1)
            .mode(Mode::Backpressure),
    );
    let first = svc.ready().await.unwrap().call(1);
    let mut waiting = svc.clone();
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| waiting.poll_ready(cx)));
    assert_pending!(ready.poll());
    assert_eq!(svc.handle().queued(), 1);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(!ready.is_woken(), "no timeout in backpressure mode");
    assert_pending!(ready.poll());

    backend.answer(1, false);
    assert!(
        !ready.is_woken(),
        "the permit comes back when the call completes"
    );
    first.await.unwrap();
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    drop(ready);
    // The permit was handed over in poll_ready and is spent by call.
    assert_eq!(svc.handle().in_flight(), 1);
    let second = waiting.call(2);
    backend.answer(2, false);
    assert_eq!(second.await.unwrap(), 2);
    assert_eq!(svc.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_service_leaves_the_queue_and_returns_a_handed_permit() {
    let (mut svc, backend) = bulkhead(
        BulkheadLayer::builder()
            .max_concurrent(1)
            .mode(Mode::Backpressure),
    );
    let first = svc.ready().await.unwrap().call(1);
    let mut a = svc.clone();
    let mut b = svc.clone();
    assert!(futures::poll!(futures::future::poll_fn(|cx| a.poll_ready(cx))).is_pending());
    assert!(futures::poll!(futures::future::poll_fn(|cx| b.poll_ready(cx))).is_pending());
    assert_eq!(svc.handle().queued(), 2);
    drop(a);
    assert_eq!(svc.handle().queued(), 1);
    backend.answer(1, false);
    first.await.unwrap();
    // b was handed the permit; dropping it passes the permit on.
    assert_eq!((svc.handle().in_flight(), svc.handle().queued()), (1, 0));
    drop(b);
    assert_eq!(svc.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn resize_up_while_busy_admits_queued_requests_at_once() {
    let (svc, backend) = bulkhead(one_permit_and_a_queue(10, Duration::from_secs(60)));
    let handle = svc.handle();
    let (_holder, queued) = hold_and_queue(&svc, 3).await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 3));
    handle.resize(4).unwrap();
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (4, 0));
    assert_eq!(backend.active(), 4);
    for id in 1..=3 {
        backend.answer(id, false);
    }
    for q in queued {
        q.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn resize_down_while_busy_keeps_held_permits_and_admits_only_below_the_new_limit() {
    let (mut svc, backend) = bulkhead(BulkheadLayer::builder().max_concurrent(4));
    let handle = svc.handle();
    let calls: Vec<_> = (1..=4)
        .map(|id| tokio::spawn(svc.clone().oneshot(id)))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 4);
    handle.resize(2).unwrap();
    assert_eq!(
        (handle.limit(), handle.in_flight()),
        (2, 4),
        "nothing revoked"
    );
    assert_eq!(backend.active(), 4);

    let err = svc.ready().await.unwrap().call(5).await.unwrap_err();
    assert_eq!(full(&err).limit(), 2);
    for id in [1, 2] {
        backend.answer(id, false);
    }
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 2);
    assert!(
        svc.ready().await.unwrap().call(6).await.is_err(),
        "2 in flight, limit 2"
    );
    backend.answer(3, false);
    tokio::task::yield_now().await;
    let admitted = tokio::spawn(svc.ready().await.unwrap().call(7));
    tokio::task::yield_now().await;
    assert_eq!(backend.seen(), [1, 2, 3, 4, 7]);
    backend.answer(4, false);
    backend.answer(7, false);
    admitted.await.unwrap().unwrap();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(handle.resize(0).is_err());
}

type Counting = tower::util::BoxCloneSyncService<u32, u32, BoxError>;

/// One call, boxed: spares the compiler a higher-ranked `Send` proof it
/// cannot make for the generic future inside a spawned task.
fn call(
    svc: &Bulkhead<Counting>,
    i: u32,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, BoxError>> + Send>> {
    Box::pin(svc.clone().oneshot(i))
}

/// Runs `tasks` tasks of `calls` calls each through `svc` on a
/// multi-thread runtime (resizing the bulkhead between 2 and 8 meanwhile if
/// `resize`); returns how many calls were rejected.
fn stress(svc: Bulkhead<Counting>, tasks: u32, calls: u32, resize: bool) -> usize {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let handle = svc.handle();
    let rejected = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut joins = Vec::new();
        for _ in 0..tasks {
            let svc = svc.clone();
            let rejected = rejected.clone();
            joins.push(tokio::spawn(async move {
                for i in 0..calls {
                    if call(&svc, i).await.is_err() {
                        rejected.fetch_add(1, SeqCst);
                    }
                }
            }));
        }
        if resize {
            for i in 0..200 {
                handle.resize(if i % 2 == 0 { 2 } else { 8 }).unwrap();
                tokio::task::yield_now().await;
            }
            handle.resize(8).unwrap();
        }
        for j in joins {
            j.await.unwrap();
        }
    });
    assert_eq!(handle.in_flight(), 0, "a permit leaked");
    assert_eq!(handle.queued(), 0);
    rejected.load(SeqCst)
}

/// A backend that counts the calls it works on at once.
fn counting_backend() -> (Counting, Arc<AtomicUsize>) {
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (a, m) = (active.clone(), most.clone());
    let svc = service_fn(move |i: u32| {
        let (active, most) = (a.clone(), m.clone());
        async move {
            let now = active.fetch_add(1, SeqCst) + 1;
            most.fetch_max(now, SeqCst);
            for _ in 0..(i % 3 + 1) {
                tokio::task::yield_now().await;
            }
            active.fetch_sub(1, SeqCst);
            Ok::<_, BoxError>(i)
        }
    });
    (tower::util::BoxCloneSyncService::new(svc), most)
}

#[test]
fn never_more_than_max_concurrent_in_flight_under_stress() {
    for (mode, queue) in [
        (Mode::Backpressure, 0),
        (Mode::FailFast, 16),
        (Mode::FailFast, 0),
    ] {
        let (backend, most) = counting_backend();
        let svc = BulkheadLayer::builder()
            .max_concurrent(8)
            .mode(mode)
            .max_queue(queue)
            .max_wait(Duration::from_secs(30))
            .build()
            .unwrap()
            .layer(backend);
        let rejected = stress(svc, 64, 200, false);
        let most = most.load(SeqCst);
        assert!(most <= 8, "{mode:?}/{queue}: {most} in flight at once");
        assert!(
            most >= 2,
            "{mode:?}/{queue}: the stress never overlapped calls"
        );
        if mode == Mode::Backpressure {
            assert_eq!(rejected, 0, "backpressure rejects nothing");
        }
    }
}

#[test]
fn never_more_than_the_largest_limit_in_flight_while_resized_under_stress() {
    let (backend, most) = counting_backend();
    let svc = BulkheadLayer::builder()
        .max_concurrent(8)
        .mode(Mode::Backpressure)
        .order(Order::Lifo)
        .build()
        .unwrap()
        .layer(backend);
    let rejected = stress(svc, 64, 100, true);
    assert!(most.load(SeqCst) <= 8);
    assert_eq!(rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn clones_and_shared_layers_share_one_bulkhead() {
    let backend = Manual::default();
    let (layer, handle) = BulkheadLayer::builder()
        .max_concurrent(1)
        .build()
        .unwrap()
        .shared();
    let mut a = layer.layer(backend.clone());
    let mut b = layer.layer(backend.clone());
    assert!(handle.same_bulkhead(&a.handle()));
    let _held = a.ready().await.unwrap().call(1);
    assert!(b.ready().await.unwrap().call(2).await.is_err());
    assert!(a.clone().oneshot(3).await.is_err());

    // A plain layer gives each service a bulkhead of its own.
    let layer = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let mut c = layer.layer(backend.clone());
    let mut d = layer.layer(backend.clone());
    assert!(!c.handle().same_bulkhead(&d.handle()));
    let _c = c.ready().await.unwrap().call(4);
    let _d = d.ready().await.unwrap().call(5);
    assert_eq!(backend.seen(), [1, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn metrics_and_events_report_in_flight_queue_rejections_and_resizes() {
    let recorder = Recorder::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let (svc, backend) = recorder.with(|| {
        bulkhead(
            one_permit_and_a_queue(1, Duration::from_millis(10))
                .name("db")
                .on_event(move |e| log.lock().push(e.clone())),
        )
    });
    let db = [("name", "db")];
    let values = recorder.snapshot();
    assert_eq!(values.get("watertight_bulkhead_limit", &db), Some(1.0));
    assert_eq!(values.get("watertight_bulkhead_in_flight", &db), Some(0.0));
    assert_eq!(values.get("watertight_bulkhead_queued", &db), Some(0.0));

    let first = start(&svc, 1).await;
    let _queued = start(&svc, 2).await;
    let values = recorder.snapshot();
    assert_eq!(values.get("watertight_bulkhead_in_flight", &db), Some(1.0));
    assert_eq!(values.get("watertight_bulkhead_queued", &db), Some(1.0));
    assert_eq!(
        values.get("watertight_bulkhead_admitted_total", &db),
        Some(1.0)
    );
    let _third = start(&svc, 3).await;
    tokio::time::advance(Duration::from_millis(10)).await;
    tokio::task::yield_now().await;
    svc.handle().resize(3).unwrap();
    backend.answer(1, false);
    first.await.unwrap().unwrap();

    let values = recorder.snapshot();
    let rejected = |reason| {
        values.get(
            "watertight_bulkhead_rejected_total",
            &[("name", "db"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("queue_full"), Some(1.0));
    assert_eq!(rejected("wait_elapsed"), Some(1.0));
    assert_eq!(values.get("watertight_bulkhead_limit", &db), Some(3.0));

    let events = events.lock();
    let reasons: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected(r) => Some(r.reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [Reason::QueueFull, Reason::WaitElapsed]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::LimitChanged(c) if (c.from, c.to, c.cause) == (1, 3, Cause::Resized)
    )));
}

#[test]
fn invalid_configuration_names_the_field() {
    let err = |b: BulkheadBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(
        err(BulkheadLayer::builder().max_concurrent(0)),
        "max_concurrent"
    );
    assert_eq!(
        err(BulkheadLayer::builder().max_concurrent(1 << 31)),
        "max_concurrent"
    );
    assert_eq!(
        err(BulkheadLayer::builder().max_wait(Duration::ZERO)),
        "max_wait"
    );
    assert_eq!(err(BulkheadLayer::builder().name("")), "name");
    assert_eq!(
        err(BulkheadLayer::builder().max_queue(u32::MAX)),
        "max_queue"
    );
    let e = BulkheadLayer::builder()
        .max_concurrent(0)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid bulkhead configuration: `max_concurrent` must be in 1..=1073741824, got 0"
    );
}

#[test]
fn defaults_are_one_hundred_in_flight_and_no_queue() {
    let c = BulkheadConfig::default();
    assert_eq!((c.max_concurrent, c.max_queue), (100, 0));
    assert_eq!((c.mode, c.order), (Mode::FailFast, Order::Fifo));
}

#[cfg(feature = "serde")]
#[test]
fn toml_configuration_round_trips_and_names_bad_fields() {
    let c: BulkheadConfig = toml::from_str(
        r#"
        name = "payments-db"
        max_concurrent = 32
        max_queue = 64
        max_wait = "250ms"
        order = "lifo"
        mode = "backpressure"
        "#,
    )
    .unwrap();
    assert_eq!(c.max_concurrent, 32);
    assert_eq!(c.max_wait, Duration::from_millis(250));
    assert_eq!((c.order, c.mode), (Order::Lifo, Mode::Backpressure));
    let back: BulkheadConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    BulkheadLayer::from_config(c).unwrap();

    let err = toml::from_str::<BulkheadConfig>("max_concurrent = 0").unwrap_err();
    assert!(err.to_string().contains("`max_concurrent`"), "{err}");
    let err = toml::from_str::<BulkheadConfig>("max_concurent = 5").unwrap_err();
    assert!(err.to_string().contains("max_concurent"), "{err}");
}
