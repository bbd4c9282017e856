//! Shared pieces of the circuit breaker tests: a breaker around a
//! `tower_test` mock ([`Harness`]), calls answered on demand, and an event
//! log.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_test::assert_ready_ok;
use tower_test::mock::{self, Handle, Mock, Spawn};
use watertight_circuit_breaker::error::Open;
use watertight_circuit_breaker::event::{Event, Transition};
use watertight_circuit_breaker::{
    Builder, CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer, Snapshot, State,
};
use watertight_core::{find_cause, BoxError};

pub type Req = &'static str;
pub type Res = &'static str;
pub type MockHandle = Handle<Req, Res>;
/// The breaker under test.
pub type Breaker = CircuitBreaker<Mock<Req, Res>>;

/// How the backend answers a call that reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Err,
}

/// A builder with a seeded backoff, so runs are reproducible, and every
/// trip policy off: each test turns on the one it is about.
pub fn builder() -> Builder {
    CircuitBreakerLayer::builder()
        .name("test")
        .seed(7)
        .disable_failure_rate()
        .disable_consecutive_failures()
        .open_duration(Duration::from_secs(5))
}

/// `builder` with the failure-rate policy on: `threshold` once the window
/// holds `minimum_calls` calls.
pub fn failure_rate(threshold: f64, minimum_calls: u64) -> Builder {
    builder()
        .failure_rate_threshold(threshold)
        .minimum_calls(minimum_calls)
}

/// A breaker from `builder` around a mock backend.
pub fn spawn(builder: Builder) -> Harness<Breaker> {
    Harness::new(builder.build().expect("valid configuration"))
}

/// A service under test (a breaker, a keyed breaker) and the mock backend
/// behind it.
pub struct Harness<S> {
    pub svc: Spawn<S>,
    pub backend: MockHandle,
}

impl<S> Harness<S>
where
    S: tower::Service<Req, Response = Res, Error = BoxError>,
{
    /// `layer` around a mock backend.
    pub fn new<L: tower::Layer<Mock<Req, Res>, Service = S>>(layer: L) -> Self {
        let (svc, backend) = mock::spawn_layer(layer);
        Harness { svc, backend }
    }

    /// Starts one call of `"req"`: `poll_ready` must be ready.
    pub fn start(&mut self) -> InFlight<S::Future> {
        self.start_with("req")
    }

    /// Starts one call of `req`: `poll_ready` must be ready.
    pub fn start_with(&mut self, req: Req) -> InFlight<S::Future> {
        assert_ready_ok!(self.svc.poll_ready());
        let future = tokio_test::task::spawn(self.svc.call(req));
        let reply = match self.backend.poll_request() {
            Poll::Ready(Some((got, send))) => {
                assert_eq!(got, req);
                Some(send)
            }
            _ => None,
        };
        InFlight { future, reply }
    }

    /// Makes one call answered with `reply` if it reaches the backend.
    pub fn call(&mut self, reply: Reply) -> Result<Res, BoxError> {
        self.call_with("req", reply)
    }

    /// Makes one call of `req` answered with `reply` if it reaches the
    /// backend; one that does not fails at once.
    pub fn call_with(&mut self, req: Req, reply: Reply) -> Result<Res, BoxError> {
        let c = self.start_with(req);
        if c.reached_backend() {
            c.answer(reply)
        } else {
            Err(c.refusal())
        }
    }

    /// Makes `n` calls answered with `reply`, each of which must reach the
    /// backend.
    pub fn calls(&mut self, n: usize, reply: Reply) {
        for i in 0..n {
            let c = self.start();
            assert!(c.reached_backend(), "call {i} of {n} was rejected");
            let _ = c.answer(reply);
        }
    }
}

impl Harness<Breaker> {
    pub fn handle(&self) -> CircuitBreakerHandle {
        self.svc.get_ref().handle()
    }

    pub fn state(&self) -> State {
        self.handle().state()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.handle().snapshot()
    }
}

/// A call in flight: the response future and, if the call reached the
/// backend, the means to answer it.
pub struct InFlight<F> {
    pub future: tokio_test::task::Spawn<F>,
    pub reply: Option<mock::SendResponse<Res>>,
}

impl<F: Future<Output = Result<Res, BoxError>>> InFlight<F> {
    /// Whether the breaker let the call through to the backend.
    pub fn reached_backend(&self) -> bool {
        self.reply.is_some()
    }

    /// Answers the call and returns its result.
    pub fn answer(mut self, reply: Reply) -> Result<Res, BoxError> {
        let send = self.reply.take().expect("the call reached the backend");
        match reply {
            Reply::Ok => send.send_response("ok"),
            Reply::Err => send.send_error("backend failed"),
        }
        match self.future.poll() {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("an answered call completes"),
        }
    }

    /// The error of a call that never reached the backend.
    pub fn refusal(mut self) -> BoxError {
        assert!(self.reply.is_none(), "the call reached the backend");
        match self.future.poll() {
            Poll::Ready(Err(e)) => e,
            other => panic!("expected a refusal, got {:?}", other.map(|r| r.is_ok())),
        }
    }

    /// The rejection of a call that never reached the backend.
    pub fn rejection(self) -> Open {
        let e = self.refusal();
        open(&e).unwrap_or_else(|| panic!("rejected with error::Open, got {e}"))
    }
}

/// The breaker's rejection inside `err`, if it is one.
pub fn open(err: &BoxError) -> Option<Open> {
    find_cause::<Open>(&**err).cloned()
}

/// A listener that keeps every event.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn listener(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let log = self.0.clone();
        move |e: &Event| log.lock().push(e.clone())
    }

    pub fn transitions(&self) -> Vec<Transition> {
        self.0
            .lock()
            .iter()
            .filter_map(|e| match e {
                Event::Transition(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// The `(from, to)` of every transition so far.
    pub fn path(&self) -> Vec<(State, State)> {
        self.transitions().iter().map(|t| (t.from, t.to)).collect()
    }

    pub fn all(&self) -> Vec<Event> {
        self.0.lock().clone()
    }
}
