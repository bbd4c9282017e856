//! Shared pieces of the circuit breaker tests: a breaker around a
//! `tower_test` mock, calls answered on demand, and an event log.
#![allow(dead_code, unreachable_pub)]

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
pub type Svc = Spawn<CircuitBreaker<Mock<Req, Res>>>;
pub type MockHandle = Handle<Req, Res>;

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

/// A breaker from `builder` around a mock backend.
pub fn spawn(builder: Builder) -> (Svc, MockHandle) {
    mock::spawn_layer(builder.build().expect("valid configuration"))
}

pub fn handle(svc: &Svc) -> CircuitBreakerHandle {
    svc.get_ref().handle()
}

pub fn state(svc: &Svc) -> State {
    handle(svc).state()
}

pub fn snapshot(svc: &Svc) -> Snapshot {
    handle(svc).snapshot()
}

/// A call in flight: the response future and, if the call reached the
/// backend, the means to answer it.
pub struct InFlight {
    pub future:
        tokio_test::task::Spawn<<CircuitBreaker<Mock<Req, Res>> as tower::Service<Req>>::Future>,
    pub reply: Option<mock::SendResponse<Res>>,
}

impl InFlight {
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

    /// The rejection of a call that never reached the backend.
    pub fn rejection(mut self) -> Open {
        assert!(self.reply.is_none(), "the call reached the backend");
        match self.future.poll() {
            Poll::Ready(Err(e)) => open(&e).expect("rejected with error::Open"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

/// Starts one call: `poll_ready` must be ready.
pub fn start(svc: &mut Svc, handle: &mut MockHandle) -> InFlight {
    assert_ready_ok!(svc.poll_ready());
    let future = tokio_test::task::spawn(svc.call("req"));
    let reply = match handle.poll_request() {
        Poll::Ready(Some((req, send))) => {
            assert_eq!(req, "req");
            Some(send)
        }
        _ => None,
    };
    InFlight { future, reply }
}

/// Makes one call answered with `reply` if it reaches the backend.
pub fn call(svc: &mut Svc, handle: &mut MockHandle, reply: Reply) -> Result<Res, BoxError> {
    let c = start(svc, handle);
    if c.reached_backend() {
        c.answer(reply)
    } else {
        Err(Box::new(c.rejection()))
    }
}

/// Makes `n` calls answered with `reply`, each of which must reach the
/// backend.
pub fn calls(svc: &mut Svc, handle: &mut MockHandle, n: usize, reply: Reply) {
    for i in 0..n {
        let c = start(svc, handle);
        assert!(c.reached_backend(), "call {i} of {n} was rejected");
        let _ = c.answer(reply);
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
