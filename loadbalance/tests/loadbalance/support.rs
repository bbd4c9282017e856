//! Test backends whose behaviour a test scripts as it goes, and helpers
//! to count where requests went.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::task::AtomicWaker;
use http::{Request, Response};
use parking_lot::Mutex;
use tower::{Service, ServiceExt};
use watertight_core::{BoxError, Change, Endpoint, Health, Locality};
use watertight_loadbalance::Balancer;

pub type Req = Request<()>;
pub type Res = Response<String>;
pub type Lb = Balancer<Backend, Req>;

/// One scripted backend; clones share its state.
#[derive(Clone)]
pub struct Backend(pub Arc<State>);

pub struct State {
    pub id: String,
    /// The status code answered.
    pub status: AtomicU16,
    /// Every n-th call answers 503 (0: never).
    pub fail_every: AtomicU32,
    pub latency_us: AtomicU64,
    /// A `Retry-After` header (seconds) on failures (0: none).
    pub retry_after: AtomicU64,
    pub hang: AtomicBool,
    pub ready: AtomicBool,
    pub ready_error: AtomicBool,
    pub calls: AtomicU64,
    pub waker: AtomicWaker,
}

impl Backend {
    pub fn new(id: &str) -> Self {
        Backend(Arc::new(State {
            id: id.to_owned(),
            status: AtomicU16::new(200),
            fail_every: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            retry_after: AtomicU64::new(0),
            hang: AtomicBool::new(false),
            ready: AtomicBool::new(true),
            ready_error: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        }))
    }

    pub fn set_status(&self, status: u16) {
        self.0.status.store(status, SeqCst);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.0.latency_us.store(latency.as_micros() as u64, SeqCst);
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, SeqCst);
        if ready {
            self.0.waker.wake();
        }
    }

    pub fn fail_readiness(&self) {
        self.0.ready_error.store(true, SeqCst);
        self.0.waker.wake();
    }

    pub fn calls(&self) -> u64 {
        self.0.calls.load(SeqCst)
    }
}

impl Service<Req> for Backend {
    type Response = Res;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.0.ready_error.load(SeqCst) {
            return Poll::Ready(Err("backend refused".into()));
        }
        if self.0.ready.load(SeqCst) {
            return Poll::Ready(Ok(()));
        }
        self.0.waker.register(cx.waker());
        if self.0.ready.load(SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _: Req) -> Self::Future {
        let n = self.0.calls.fetch_add(1, SeqCst) + 1;
        let every = self.0.fail_every.load(SeqCst);
        let status = if every > 0 && n.is_multiple_of(u64::from(every)) {
            503
        } else {
            self.0.status.load(SeqCst)
        };
        let latency = Duration::from_micros(self.0.latency_us.load(SeqCst));
        let hang = self.0.hang.load(SeqCst);
        let retry_after = self.0.retry_after.load(SeqCst);
        let id = self.0.id.clone();
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut res = Response::builder().status(status);
            if status >= 500 && retry_after > 0 {
                res = res.header("retry-after", retry_after.to_string());
            }
            Ok(res.body(id).unwrap())
        })
    }
}

/// Endpoints named `<zone><n>` (`a1`, `a2`, `b1`…) with `counts[i]`
/// endpoints in zone `zones[i]`.
pub fn endpoints(zones: &[(&str, usize)]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (z, &(zone, n)) in zones.iter().enumerate() {
        for i in 1..=n {
            out.push(
                Endpoint::new(format!("10.0.{z}.{i}:80").parse().unwrap())
                    .with_id(format!("{zone}{i}"))
                    .with_locality(Locality::zone(zone)),
            );
        }
    }
    out
}

/// The local cluster of a zone-aware test: `n` clients in each zone.
pub fn clients(zones: &[(&str, usize)]) -> Vec<Endpoint> {
    endpoints(zones)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            Endpoint::new(format!("10.9.0.{}:80", i + 1).parse().unwrap())
                .with_id(format!("client-{}", e.id))
                .with_locality(e.locality)
        })
        .collect()
}

/// The backends of a test, one per endpoint id, made on demand.
#[derive(Clone, Default)]
pub struct Cluster(Arc<Mutex<HashMap<String, Backend>>>);

impl Cluster {
    pub fn get(&self, id: &str) -> Backend {
        self.0
            .lock()
            .entry(id.to_owned())
            .or_insert_with(|| Backend::new(id))
            .clone()
    }

    /// The `new_endpoint` function for a balancer.
    pub fn factory(&self) -> impl Fn(&Endpoint) -> Backend + Send + Clone + 'static {
        let c = self.clone();
        move |e: &Endpoint| c.get(e.id.as_str())
    }
}

/// A discovery stream that yields `Reset(endpoints)` then stays open.
pub fn fixed(endpoints: Vec<Endpoint>) -> watertight_discovery::Static {
    watertight_discovery::Static::new(endpoints)
}

/// A discovery stream the test feeds.
pub type Feed = mpsc::UnboundedSender<Result<Change, Infallible>>;
pub type Source = mpsc::UnboundedReceiver<Result<Change, Infallible>>;

pub fn channel() -> (Feed, Source) {
    mpsc::unbounded()
}

pub async fn send(lb: &mut Lb, req: Req) -> Result<Res, BoxError> {
    lb.ready().await?.call(req).await
}

/// Sends `n` plain requests one after another; counts the answering
/// endpoint ids.
pub async fn tally(lb: &mut Lb, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let res = send(lb, Request::new(())).await.expect("request failed");
        *out.entry(res.into_body()).or_insert(0) += 1;
    }
    out
}

/// Shares per zone (the id's first letter) of a tally.
pub fn zone_shares(t: &BTreeMap<String, usize>) -> BTreeMap<String, f64> {
    let total: usize = t.values().sum();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (id, n) in t {
        *counts.entry(id[..1].to_owned()).or_insert(0) += n;
    }
    counts
        .into_iter()
        .map(|(z, n)| (z, n as f64 / total as f64))
        .collect()
}

/// The share of one endpoint id in a tally.
pub fn share(t: &BTreeMap<String, usize>, id: &str) -> f64 {
    let total: usize = t.values().sum();
    t.get(id).copied().unwrap_or(0) as f64 / total as f64
}

pub fn assert_near(name: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{name}: got {got:.4}, want {want:.4} ± {tolerance}"
    );
}

pub fn with_health(mut e: Endpoint, health: Health) -> Endpoint {
    e.health = health;
    e
}
