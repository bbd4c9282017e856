//! Model-based test: random sequences of calls, answers, cancellations,
//! manual controls and time advances, run against the breaker and against
//! a small reference model of its state machine; both must agree after
//! every step.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use tokio_test::assert_ready_ok;
use tower_test::mock::{self, Mock, SendResponse, Spawn};
use watertight_circuit_breaker::{Backoff, CircuitBreaker, CircuitBreakerLayer, ClassifyFn, State};
use watertight_core::classify::classify_fn;
use watertight_core::{BoxError, ResponseClass};

use crate::support::{open, Req, Res};

type Classifier = ClassifyFn<fn(&Result<Res, BoxError>) -> ResponseClass>;
type Breaker = CircuitBreaker<Mock<Req, Res>, Classifier>;
type Future = tokio_test::task::Spawn<<Breaker as tower::Service<Req>>::Future>;

fn classify(r: &Result<Res, BoxError>) -> ResponseClass {
    match r {
        Ok(_) => ResponseClass::Success,
        Err(e) if e.to_string() == "ignored" => ResponseClass::Ignored,
        Err(_) => ResponseClass::RETRYABLE,
    }
}

const OPEN_BASE_MS: u64 = 1_000;
const OPEN_MAX_MS: u64 = 4_000;

#[derive(Clone, Debug)]
struct Params {
    consecutive: Option<u32>,
    /// Threshold, count window size, minimum calls.
    failure_rate: Option<(f64, usize, u64)>,
    permitted: u32,
    threshold: u32,
    max_half_open_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Err,
    Ignored,
}

#[derive(Clone, Debug)]
enum Op {
    Call,
    Finish(usize, Answer),
    Cancel(usize),
    Advance(u64),
    ForceOpen,
    ForceClose,
    Reset,
}

fn params() -> impl Strategy<Value = Params> {
    (
        prop::option::of(1u32..=4),
        prop::option::of((prop::sample::select(vec![0.5, 1.0]), 1usize..=6, 1u64..=6)),
        1u32..=3,
        1u32..=3,
        prop::option::of(prop::sample::select(vec![1_500u64, 3_000])),
    )
        .prop_map(
            |(consecutive, failure_rate, permitted, threshold, max_half_open_ms)| Params {
                consecutive,
                failure_rate,
                permitted,
                threshold,
                max_half_open_ms,
            },
        )
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![4 => Just(Answer::Ok), 4 => Just(Answer::Err), 1 => Just(Answer::Ignored)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Call),
        5 => (any::<usize>(), answer()).prop_map(|(i, a)| Op::Finish(i, a)),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (0u64..=6).prop_map(|n| Op::Advance(n * 500)),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::ForceClose), Just(Op::Reset)],
    ]
}

/// What the model says about a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Admitted while closed, in this generation.
    Admitted(u64),
    /// A probe of this generation.
    Probe(u64),
}

/// The reference model: plain fields, no atomics, time in milliseconds.
#[derive(Debug)]
struct Model {
    p: Params,
    now: u64,
    state: State,
    generation: u64,
    window: VecDeque<bool>,
    consecutive: u32,
    attempt: u32,
    open_until: u64,
    half_open_until: Option<u64>,
    in_flight: u32,
    successes: u32,
    trips: u64,
    rejected: u64,
    late: u64,
}

impl Model {
    fn new(p: Params) -> Self {
        Model {
            p,
            now: 0,
            state: State::Closed,
            generation: 0,
            window: VecDeque::new(),
            consecutive: 0,
            attempt: 0,
            open_until: 0,
            half_open_until: None,
            in_flight: 0,
            successes: 0,
            trips: 0,
            rejected: 0,
            late: 0,
        }
    }

    fn to(&mut self, to: State) {
        self.generation += 1;
        self.in_flight = 0;
        self.successes = 0;
        match to {
            State::Open => {
                let d = (OPEN_BASE_MS << self.attempt.min(10)).min(OPEN_MAX_MS);
                self.attempt += 1;
                self.open_until = self.now + d;
                self.trips += 1;
            }
            State::HalfOpen => self.half_open_until = self.p.max_half_open_ms.map(|m| self.now + m),
            State::Closed => {
                self.window.clear();
                self.consecutive = 0;
                self.attempt = 0;
            }
            _ => {}
        }
        self.state = to;
    }

    /// `Ok(kind)` or the rejection's state and retry-after.
    fn admit(&mut self) -> Result<Kind, (State, Duration)> {
        loop {
            match self.state {
                State::Closed => return Ok(Kind::Admitted(self.generation)),
                State::ForcedOpen => return Err((State::ForcedOpen, Duration::MAX)),
                State::Open if self.now < self.open_until => {
                    return Err((
                        State::Open,
                        Duration::from_millis(self.open_until - self.now),
                    ))
                }
                State::Open => self.to(State::HalfOpen),
                State::HalfOpen if self.in_flight < self.p.permitted => {
                    self.in_flight += 1;
                    return Ok(Kind::Probe(self.generation));
                }
                State::HalfOpen => match self.half_open_until {
                    Some(t) if self.now >= t => self.to(State::Open),
                    _ => return Err((State::HalfOpen, Duration::ZERO)),
                },
                s => unreachable!("the model never enters {s}"),
            }
        }
    }

    fn progress(&mut self) {
        if let Some(m) = self.p.max_half_open_ms {
            self.half_open_until = Some(self.now + m);
        }
    }

    fn finish(&mut self, kind: Kind, answer: Answer) {
        match kind {
            Kind::Admitted(g) => {
                if answer == Answer::Ignored {
                    return;
                }
                if g != self.generation {
                    self.late += 1;
                    return;
                }
                let failed = answer == Answer::Err;
                let mut trip = false;
                if let Some((threshold, size, minimum)) = self.p.failure_rate {
                    self.window.push_back(failed);
                    if self.window.len() > size {
                        self.window.pop_front();
                    }
                    let calls = self.window.len() as u64;
                    let failures = self.window.iter().filter(|f| **f).count() as u64;
                    if calls >= minimum.min(size as u64)
                        && failures as f64 / calls as f64 >= threshold
                    {
                        trip = true;
                    }
                }
                if failed {
                    self.consecutive += 1;
                    trip |= self.p.consecutive.is_some_and(|c| self.consecutive >= c);
                } else {
                    self.consecutive = 0;
                }
                if trip {
                    self.to(State::Open);
                }
            }
            Kind::Probe(g) => {
                if g != self.generation {
                    if answer != Answer::Ignored {
                        self.late += 1;
                    }
                    return;
                }
                self.in_flight -= 1;
                match answer {
                    Answer::Ok => {
                        self.successes += 1;
                        if self.successes >= self.p.threshold {
                            self.to(State::Closed);
                        } else {
                            self.progress();
                        }
                    }
                    Answer::Err => self.to(State::Open),
                    Answer::Ignored => self.progress(),
                }
            }
        }
    }

    fn cancel(&mut self, kind: Kind) {
        if let Kind::Probe(g) = kind {
            if g == self.generation {
                self.in_flight -= 1;
                self.progress();
            }
        }
    }
}

struct Call {
    kind: Kind,
    future: Future,
    reply: SendResponse<Res>,
}

fn layer(p: &Params) -> watertight_circuit_breaker::CircuitBreakerLayer<Classifier> {
    let mut b = CircuitBreakerLayer::builder()
        .name("model")
        .disable_failure_rate()
        .disable_consecutive_failures()
        .open_backoff(
            Backoff::exponential(
                Duration::from_millis(OPEN_BASE_MS),
                Duration::from_millis(OPEN_MAX_MS),
            )
            .unwrap(),
        )
        .permitted_probes(p.permitted)
        .success_threshold(p.threshold)
        .max_half_open_duration(p.max_half_open_ms.map(Duration::from_millis));
    if let Some(c) = p.consecutive {
        b = b.consecutive_failures(c);
    }
    if let Some((t, size, min)) = p.failure_rate {
        b = b
            .failure_rate_threshold(t)
            .count_window(size)
            .minimum_calls(min);
    }
    b.classify(classify_fn(
        classify as fn(&Result<Res, BoxError>) -> ResponseClass,
    ))
    .build()
    .unwrap()
}

async fn run(p: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (mut svc, mut backend): (Spawn<Breaker>, _) = mock::spawn_layer(layer(&p));
    let handle = svc.get_ref().handle();
    let mut model = Model::new(p);
    let mut calls: Vec<Call> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Call => {
                let expected = model.admit();
                assert_ready_ok!(svc.poll_ready());
                let mut future = tokio_test::task::spawn(svc.call("req"));
                let reached = match backend.poll_request() {
                    Poll::Ready(Some((_, reply))) => Some(reply),
                    _ => None,
                };
                match (expected, reached) {
                    (Ok(kind), Some(reply)) => calls.push(Call {
                        kind,
                        future,
                        reply,
                    }),
                    (Err((state, retry_after)), None) => {
                        model.rejected += 1;
                        let Poll::Ready(Err(e)) = future.poll() else {
                            return Err(TestCaseError::fail(format!("step {step}: not rejected")));
                        };
                        let o = open(&e).expect("an error::Open");
                        prop_assert_eq!(
                            (o.state(), o.retry_after()),
                            (state, retry_after),
                            "step {}",
                            step
                        );
                    }
                    (expected, reached) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: model says {expected:?}, breaker {}",
                            if reached.is_some() {
                                "admitted"
                            } else {
                                "rejected"
                            }
                        )))
                    }
                }
            }
            Op::Finish(i, answer) if !calls.is_empty() => {
                let mut c = calls.swap_remove(i % calls.len());
                match answer {
                    Answer::Ok => c.reply.send_response("ok"),
                    Answer::Err => c.reply.send_error("failed"),
                    Answer::Ignored => c.reply.send_error("ignored"),
                }
                prop_assert!(c.future.poll().is_ready());
                model.finish(c.kind, answer);
            }
            Op::Cancel(i) if !calls.is_empty() => {
                let c = calls.swap_remove(i % calls.len());
                drop(c.future);
                model.cancel(c.kind);
            }
            Op::Finish(..) | Op::Cancel(_) => {}
            Op::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                model.now += ms;
            }
            Op::ForceOpen => {
                let changed = handle.force_open();
                prop_assert_eq!(changed, model.state != State::ForcedOpen);
                if changed {
                    model.to(State::ForcedOpen);
                }
            }
            Op::ForceClose => {
                let changed = handle.force_close();
                prop_assert_eq!(changed, model.state != State::Closed);
                if changed {
                    model.to(State::Closed);
                }
            }
            Op::Reset => {
                handle.reset();
                model.to(State::Closed);
                model.trips = 0;
                model.rejected = 0;
                model.late = 0;
            }
        }
        let s = handle.snapshot();
        let failures = model.window.iter().filter(|f| **f).count() as u64;
        let half_open = model.state == State::HalfOpen;
        let retry_after = match model.state {
            State::Open => Some(Duration::from_millis(
                model.open_until.saturating_sub(model.now),
            )),
            State::ForcedOpen => Some(Duration::MAX),
            _ => None,
        };
        prop_assert_eq!(
            (s.state, s.generation, s.retry_after),
            (model.state, model.generation, retry_after),
            "step {}: {:?}",
            step,
            model
        );
        prop_assert_eq!(
            (s.window.calls, s.window.failures, s.consecutive_failures),
            (model.window.len() as u64, failures, model.consecutive),
            "step {}: {:?}",
            step,
            model
        );
        prop_assert_eq!(
            (s.probes_in_flight, s.probe_successes),
            if half_open {
                (model.in_flight, model.successes)
            } else {
                (0, 0)
            },
            "step {}: {:?}",
            step,
            model
        );
        prop_assert_eq!(
            (s.trips, s.rejected, s.late_results),
            (model.trips, model.rejected, model.late),
            "step {}: {:?}",
            step,
            model
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_agrees_with_its_reference_model(p in params(), ops in prop::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(p, ops))?;
    }
}
