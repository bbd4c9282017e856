//! PartitionedBulkhead: guaranteed shares, borrowing, criticality shedding.

mod support;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tower::{service_fn, Layer, Service, ServiceExt};
use watertight_bulkhead::error::{Full, Reason};
use watertight_bulkhead::event::{Cause, Event};
use watertight_bulkhead::{
    Criticality, PartitionedBulkhead, PartitionedBulkheadLayer, PartitionedConfig,
};
use watertight_core::ext::Extensions;
use watertight_core::{find_cause, BoxError};

use support::Recorder;

/// A request of a tenant, maybe carrying a criticality.
#[derive(Clone, Debug)]
struct Job {
    tenant: &'static str,
    criticality: Option<Criticality>,
}

impl Extensions for Job {
    fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.criticality
            .as_ref()
            .and_then(|c| (c as &dyn Any).downcast_ref::<T>())
    }
}

fn job(tenant: &'static str) -> Job {
    Job {
        tenant,
        criticality: None,
    }
}

fn with(tenant: &'static str, c: Criticality) -> Job {
    Job {
        tenant,
        criticality: Some(c),
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type Svc = PartitionedBulkhead<
    tower::util::BoxCloneSyncService<Job, (), BoxError>,
    fn(&Job) -> Option<&str>,
>;

fn tenant(job: &Job) -> Option<&str> {
    Some(job.tenant)
}

/// A bulkhead over a backend whose calls never finish on their own.
fn bulkhead(layer: watertight_bulkhead::PartitionedBuilder) -> Svc {
    let backend = service_fn(|_: Job| std::future::pending::<Result<(), BoxError>>());
    layer
        .partitioner(tenant as fn(&Job) -> Option<&str>)
        .build()
        .unwrap()
        .layer(tower::util::BoxCloneSyncService::new(backend))
}

/// Calls `svc` with `req`: `Ok` holding the call in flight, or the
/// rejection.
async fn admit(svc: &mut Svc, req: Job) -> Result<Pending, Full> {
    let mut fut: Pending = Box::pin(svc.ready().await.unwrap().call(req));
    match futures::poll!(fut.as_mut()) {
        std::task::Poll::Pending => Ok(fut),
        std::task::Poll::Ready(r) => {
            let err = r.expect_err("the backend never answers");
            Err(find_cause::<Full>(&*err).expect("a rejection").clone())
        }
    }
}

/// Calls `svc` with `n` copies of `req`, which must all be admitted;
/// returns the calls in flight.
async fn admit_all(svc: &mut Svc, n: usize, req: Job) -> Vec<Pending> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(admit(svc, req.clone()).await.expect("admitted"));
    }
    held
}

/// Calls `svc` with `req`, which must be rejected.
async fn reject(svc: &mut Svc, req: Job) -> Full {
    match admit(svc, req).await {
        Ok(_) => panic!("admitted"),
        Err(full) => full,
    }
}

#[tokio::test]
async fn partition_guarantee_is_admitted_after_another_borrowed_everything() {
    let mut svc = bulkhead(
        PartitionedBulkheadLayer::builder()
            .limit(10)
            .partition("live", 0.5)
            .partition("batch", 0.3),
    );
    let handle = svc.handle();
    // Batch borrows the whole limit while live is idle (critical: no
    // shedding fraction in the way).
    let mut held = admit_all(&mut svc, 10, with("batch", Criticality::Critical)).await;
    let err = reject(&mut svc, with("batch", Criticality::Critical)).await;
    assert_eq!(err.reason(), Reason::AtLimit);
    // Live still gets its ⌈10 × 0.5⌉ = 5.
    held.extend(admit_all(&mut svc, 5, with("live", Criticality::Critical)).await);
    assert_eq!(
        reject(&mut svc, with("live", Criticality::Critical))
            .await
            .reason(),
        Reason::AtLimit
    );
    let live = handle.partition("live").unwrap();
    assert_eq!(
        (
            live.in_flight,
            live.guaranteed,
            live.admitted,
            live.rejected
        ),
        (5, 5, 5, 1)
    );
    assert_eq!(handle.in_flight(), 15, "the guarantee overshoots the total");
    drop(held);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test]
async fn busy_partition_borrows_idle_capacity_until_the_total_is_reached() {
    let mut svc = bulkhead(
        PartitionedBulkheadLayer::builder()
            .limit(10)
            .partition("a", 0.2)
            .partition("b", 0.2),
    );
    // a's guarantee is 2; it borrows the idle rest, up to the total.
    let mut held = admit_all(&mut svc, 10, with("a", Criticality::Critical)).await;
    assert_eq!(
        reject(&mut svc, with("a", Criticality::Critical))
            .await
            .reason(),
        Reason::AtLimit
    );
    // Once a gives capacity back, b may borrow it too.
    held.truncate(4);
    held.extend(admit_all(&mut svc, 6, with("b", Criticality::Critical)).await);
    let h = svc.handle();
    assert_eq!(
        (
            h.partition("a").unwrap().in_flight,
            h.partition("b").unwrap().in_flight
        ),
        (4, 6)
    );
}

#[tokio::test]
async fn sheddable_requests_are_rejected_before_default_and_critical() {
    let mut svc = bulkhead(PartitionedBulkheadLayer::builder().limit(10));
    // Sheddable: admitted below 80% of the limit.
    let mut held = admit_all(&mut svc, 8, with("x", Criticality::Sheddable)).await;
    let shed = reject(&mut svc, with("x", Criticality::Sheddable)).await;
    assert_eq!(shed.reason(), Reason::Shed(Criticality::Sheddable));
    assert_eq!(
        shed.to_string(),
        "bulkhead is near its limit of 10 and shed a sheddable request"
    );
    // Default: below 90%.
    held.push(admit(&mut svc, job("x")).await.unwrap());
    let shed = reject(&mut svc, job("x")).await;
    assert_eq!(
        shed.reason(),
        Reason::Shed(Criticality::Default),
        "no extension: default"
    );
    // Critical: the whole limit.
    held.extend(admit_all(&mut svc, 1, with("x", Criticality::Critical)).await);
    let full = reject(&mut svc, with("x", Criticality::Critical)).await;
    assert_eq!(full.reason(), Reason::AtLimit);
    let unmatched = svc.handle().partition("(unmatched)").unwrap();
    assert_eq!(
        (unmatched.admitted, unmatched.rejected, unmatched.shed),
        (10, 3, 2)
    );
}

#[tokio::test]
async fn shedding_applies_to_a_partition_guarantee_too() {
    let mut svc = bulkhead(
        PartitionedBulkheadLayer::builder()
            .limit(10)
            .partition("live", 1.0)
            .sheddable_fraction(0.5)
            .default_fraction(0.5),
    );
    let mut held = admit_all(&mut svc, 5, with("live", Criticality::Sheddable)).await;
    assert_eq!(
        reject(&mut svc, with("live", Criticality::Sheddable))
            .await
            .reason(),
        Reason::Shed(Criticality::Sheddable)
    );
    held.extend(admit_all(&mut svc, 5, with("live", Criticality::Critical)).await);
}

#[tokio::test]
async fn unknown_keys_only_borrow() {
    let mut svc = bulkhead(
        PartitionedBulkheadLayer::builder()
            .limit(4)
            .partition("known", 0.5),
    );
    let mut held = admit_all(&mut svc, 4, with("stranger", Criticality::Critical)).await;
    assert_eq!(
        reject(&mut svc, with("stranger", Criticality::Critical))
            .await
            .reason(),
        Reason::AtLimit
    );
    let h = svc.handle();
    let u = h.partition("(unmatched)").unwrap();
    assert_eq!((u.in_flight, u.guaranteed), (4, 0));
    held.extend(admit_all(&mut svc, 1, with("known", Criticality::Critical)).await);
}

#[tokio::test]
async fn resize_recomputes_every_guarantee() {
    let mut svc = bulkhead(
        PartitionedBulkheadLayer::builder()
            .limit(10)
            .partition("a", 0.3),
    );
    let h = svc.handle();
    assert_eq!(h.partition("a").unwrap().guaranteed, 3);
    h.resize(20).unwrap();
    assert_eq!((h.limit(), h.partition("a").unwrap().guaranteed), (20, 6));
    let mut held = admit_all(&mut svc, 20, with("b", Criticality::Critical)).await;
    held.extend(admit_all(&mut svc, 6, with("a", Criticality::Critical)).await);
    assert_eq!(
        reject(&mut svc, with("a", Criticality::Critical))
            .await
            .reason(),
        Reason::AtLimit
    );
    assert_eq!(h.resize(0).unwrap_err().field(), "limit");
}

#[tokio::test]
async fn closures_read_the_partition_from_the_request() {
    let layer = PartitionedBulkheadLayer::builder()
        .limit(1)
        .partition("acme", 1.0)
        .partition_by(|job: &Job| Some(job.tenant))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: Job| async { Ok::<_, BoxError>(()) }));
    svc.ready().await.unwrap().call(job("acme")).await.unwrap();
    assert_eq!(svc.handle().partition("acme").unwrap().admitted, 1);
}

#[tokio::test]
async fn metrics_and_events_per_partition() {
    let recorder = Recorder::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let mut svc = recorder.with(|| {
        bulkhead(
            PartitionedBulkheadLayer::builder()
                .name("api")
                .limit(10)
                .partition("live", 0.5)
                .on_event(move |e| log.lock().push(e.clone())),
        )
    });
    let start = recorder.snapshot();
    assert_eq!(
        start.get("watertight_partitioned_bulkhead_limit", &[("name", "api")]),
        Some(10.0)
    );
    let _held = admit_all(&mut svc, 8, with("live", Criticality::Critical)).await;
    let _shed = reject(&mut svc, with("live", Criticality::Sheddable)).await;
    let values = recorder.snapshot();
    let live = [("name", "api"), ("partition", "live")];
    assert_eq!(
        values.get("watertight_partitioned_bulkhead_in_flight", &live),
        Some(8.0)
    );
    assert_eq!(
        values.get("watertight_partitioned_bulkhead_admitted_total", &live),
        Some(8.0)
    );
    assert_eq!(
        values.get(
            "watertight_partitioned_bulkhead_rejected_total",
            &[("partition", "live"), ("reason", "shed")]
        ),
        Some(1.0)
    );
    svc.handle().resize(20).unwrap();
    svc.handle().resize(20).unwrap();
    assert_eq!(
        recorder
            .snapshot()
            .get("watertight_partitioned_bulkhead_limit", &[("name", "api")]),
        Some(20.0)
    );
    let events = events.lock();
    let [Event::Rejected(r), Event::LimitChanged(c)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(r.partition.as_deref(), Some("live"));
    assert_eq!(r.reason, Reason::Shed(Criticality::Sheddable));
    assert_eq!(
        (c.from, c.to, c.cause),
        (10, 20, Cause::Resized),
        "one event: the second resize changed nothing"
    );
}

#[cfg(feature = "http")]
#[tokio::test]
async fn criticality_is_read_from_http_request_extensions() {
    let layer = PartitionedBulkheadLayer::builder()
        .limit(1)
        .sheddable_fraction(0.1)
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: http::Request<()>| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    let mut sheddable = http::Request::new(());
    sheddable.insert_extension(Criticality::Sheddable);
    // ⌈0.1 × 1⌉ = 1: a lone sheddable request still passes.
    let _held = svc.ready().await.unwrap().call(sheddable);
    let mut critical = http::Request::new(());
    critical.insert_extension(Criticality::Critical);
    let err = svc.ready().await.unwrap().call(critical).await.unwrap_err();
    assert_eq!(find_cause::<Full>(&*err).unwrap().reason(), Reason::AtLimit);
}

#[test]
fn invalid_configuration_names_the_field() {
    let err =
        |b: watertight_bulkhead::PartitionedBuilder| b.build().unwrap_err().field().to_owned();
    let b = PartitionedBulkheadLayer::builder;
    assert_eq!(err(b().limit(0)), "limit");
    assert_eq!(err(b().partition("a", 0.0)), "partitions[0].share");
    assert_eq!(
        b().partition("a", 1.5).build().unwrap_err().to_string(),
        "invalid bulkhead configuration: `partitions[0].share` must be a fraction in (0, 1], got 1.5"
    );
    assert_eq!(
        err(b().partition("a", 0.5).partition("", 0.1)),
        "partitions[1].name"
    );
    assert_eq!(
        err(b().partition("a", 0.5).partition("a", 0.1)),
        "partitions[1].name"
    );
    assert_eq!(
        err(b().partition("a", 0.7).partition("b", 0.7)),
        "partitions"
    );
    assert_eq!(err(b().sheddable_fraction(0.95)), "sheddable_fraction");
    assert_eq!(err(b().default_fraction(0.0)), "default_fraction");
}

#[cfg(feature = "serde")]
#[test]
fn toml_configuration_lists_partitions() {
    let c: PartitionedConfig = toml::from_str(
        r#"
        name = "api"
        limit = 200
        sheddable_fraction = 0.75
        partitions = [
            { name = "interactive", share = 0.7 },
            { name = "batch", share = 0.2 },
        ]
        "#,
    )
    .unwrap();
    assert_eq!(c.partitions.len(), 2);
    assert_eq!(c.partitions[1].share, 0.2);
    assert_eq!((c.sheddable_fraction, c.default_fraction), (0.75, 0.9));
    let err = toml::from_str::<PartitionedConfig>("partitions = [{ name = \"a\", share = 2.0 }]")
        .unwrap_err();
    assert!(err.to_string().contains("`partitions[0].share`"), "{err}");
}

#[test]
fn defaults_shed_sheddable_at_80_and_default_at_90_percent() {
    let c = PartitionedConfig::default();
    assert_eq!(
        (c.limit, c.sheddable_fraction, c.default_fraction),
        (100, 0.8, 0.9)
    );
    assert_eq!(c.retry_after, Duration::from_secs(1));
}
