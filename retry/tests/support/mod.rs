//! Shared pieces of the retry tests: request and response types that carry
//! extensions, a classifier and hint reader for them, policies, and a mock
//! backend to drive a layer.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_test::assert_ready_ok;
use tower::{Layer, Service};
use tower_test::mock::{self, Mock, Spawn};
use watertight_core::classify::{classify_fn, ClassifyFn};
use watertight_core::{BoxError, Extensions, Hint, ResponseClass};
use watertight_retry::budget::{ConcurrencyBudget, RatioBudget};
use watertight_retry::event::Event;
use watertight_retry::policy::{hints_fn, AllRequests, ByClone, HintsFn, MarkedSafe};
use watertight_retry::StandardPolicy;

/// A request carrying an id and extensions.
#[derive(Clone, Debug, Default)]
pub struct Req {
    pub id: u32,
    ext: http::Extensions,
}

impl Req {
    pub fn new(id: u32) -> Self {
        Req {
            id,
            ext: http::Extensions::new(),
        }
    }
}

/// A response: a status (5xx is a retryable failure) and an optional
/// server hint.
#[derive(Debug)]
pub struct Res {
    pub status: u16,
    pub hint: Option<Hint>,
    ext: http::Extensions,
}

impl Res {
    pub fn ok() -> Self {
        Res::status(200)
    }

    pub fn status(status: u16) -> Self {
        Res {
            status,
            hint: None,
            ext: http::Extensions::new(),
        }
    }

    pub fn with_hint(mut self, hint: Hint) -> Self {
        self.hint = Some(hint);
        self
    }
}

/// `Extensions` kept in the `ext` field.
macro_rules! carries_extensions {
    ($($t:ty),*) => {$(
        impl Extensions for $t {
            fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
                self.ext.get()
            }

            fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
                self.ext.insert(value);
            }

            fn carries_extensions(&self) -> bool {
                true
            }
        }
    )*};
}

carries_extensions!(Req, Res);

pub type Classifier = ClassifyFn<fn(&Result<Res, BoxError>) -> ResponseClass>;
pub type Hints = HintsFn<fn(&Result<Res, BoxError>) -> Option<Hint>>;

fn classify_res(r: &Result<Res, BoxError>) -> ResponseClass {
    match r {
        Ok(r) if r.status >= 500 => ResponseClass::RETRYABLE,
        Ok(r) if r.status == 499 => ResponseClass::Ignored,
        Ok(r) if r.status >= 400 => ResponseClass::FATAL,
        Ok(_) => ResponseClass::Success,
        Err(_) => ResponseClass::RETRYABLE,
    }
}

fn hint_res(r: &Result<Res, BoxError>) -> Option<Hint> {
    r.as_ref().ok().and_then(|r| r.hint)
}

pub fn classifier() -> Classifier {
    classify_fn(classify_res as fn(&Result<Res, BoxError>) -> ResponseClass)
}

pub fn hints() -> Hints {
    hints_fn(hint_res as fn(&Result<Res, BoxError>) -> Option<Hint>)
}

/// Every request idempotent.
pub type AnyPolicy = StandardPolicy<Classifier, AllRequests, Hints, ByClone>;
/// Only requests marked `RetrySafe` idempotent.
pub type MarkedPolicy = StandardPolicy<Classifier, MarkedSafe, Hints, ByClone>;

pub fn any_policy() -> AnyPolicy {
    StandardPolicy::new()
        .classify(classifier())
        .idempotency(AllRequests)
        .hints(hints())
        .clone_request(ByClone)
}

pub fn marked_policy() -> MarkedPolicy {
    any_policy().idempotency(MarkedSafe)
}

pub const MS: Duration = Duration::from_millis(1);

/// A ratio budget without its per-second reserve: `ratio` retries per
/// request, no more.
pub fn ratio_only(ratio: f64) -> RatioBudget {
    RatioBudget::builder()
        .ratio(ratio)
        .min_per_sec(0)
        .build()
        .unwrap()
}

/// A concurrency budget that lets one retry be in flight at a time, kept
/// to be watched.
pub fn one_retry_at_a_time() -> Arc<ConcurrencyBudget> {
    Arc::new(
        ConcurrencyBudget::builder()
            .ratio(0.0)
            .min_concurrency(1)
            .build()
            .unwrap(),
    )
}

/// Collects events.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn listener(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let events = self.0.clone();
        move |e: &Event| events.lock().push(e.clone())
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// `layer` over a mock backend, ready for up to 100 requests.
pub fn mocked<L>(layer: L) -> (Spawn<L::Service>, mock::Handle<Req, Res>)
where
    L: Layer<Mock<Req, Res>>,
{
    let (svc, mut handle) = mock::spawn_layer(layer);
    handle.allow(100);
    (svc, handle)
}

/// Sends `req` through the service, which must be ready, on a task of its
/// own, so the test can answer the backend's requests meanwhile.
pub fn spawn_call<S, R>(svc: &mut Spawn<S>, req: R) -> JoinHandle<Result<S::Response, S::Error>>
where
    S: Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: std::fmt::Debug + Send + 'static,
{
    assert_ready_ok!(svc.poll_ready());
    tokio::spawn(svc.call(req))
}

/// What a debugging recorder held at one instant (reading its counters
/// resets them).
pub struct Recorded(Vec<(CompositeKey, DebugValue)>);

impl Recorded {
    pub fn now(snapshotter: &Snapshotter) -> Self {
        let all = snapshotter.snapshot().into_vec();
        Recorded(all.into_iter().map(|(k, _, _, v)| (k, v)).collect())
    }

    fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        self.0
            .iter()
            .find(|(k, _)| {
                k.kind() == kind
                    && k.key().name() == name
                    && labels
                        .iter()
                        .all(|&(lk, lv)| k.key().labels().any(|l| l.key() == lk && l.value() == lv))
            })
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {name} with {labels:?}"))
    }

    /// The counter `name` carrying every label of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(MetricKind::Counter, name, labels) {
            DebugValue::Counter(n) => *n,
            other => unreachable!("{other:?}"),
        }
    }

    /// The gauge `name` carrying every label of `labels`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(MetricKind::Gauge, name, labels) {
            DebugValue::Gauge(v) => v.into_inner(),
            other => unreachable!("{other:?}"),
        }
    }
}
