//! The response body of [`HttpChaos`](crate::HttpChaos).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};

use crate::state::ActiveFault;

/// The body faults one response gets.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BodyFaults {
    throttle: Option<u64>,
    truncate: Option<u64>,
}

impl BodyFaults {
    pub(crate) const NONE: BodyFaults = BodyFaults {
        throttle: None,
        truncate: None,
    };

    pub(crate) fn new(throttle: Option<u64>, truncate: Option<u64>) -> Self {
        BodyFaults {
            throttle: throttle.filter(|r| *r > 0),
            truncate,
        }
    }

    pub(crate) fn is_some(&self) -> bool {
        self.throttle.is_some() || self.truncate.is_some()
    }
}

/// The response body of [`HttpChaos`](crate::HttpChaos), throttled or
/// truncated when a body fault fired. Its data are [`Bytes`].
///
/// Both faults carry Toxiproxy's semantics over to a body:
///
/// - `throttle` (Toxiproxy's `bandwidth`): bytes are released in pieces of
///   a tenth of a second's worth (at least one byte), each no earlier than
///   the instant at which the bytes released so far, itself included, fit
///   the rate since the body was first polled. Over any span from the
///   first poll, at most `bytes_per_second × elapsed` bytes have left.
/// - `truncate` (Toxiproxy's `limit_data`): the body ends cleanly after
///   `after_bytes` bytes; the rest, trailers included, is dropped, as when
///   a connection closes early. Truncation applies before throttling.
#[pin_project]
pub struct ChaosBody<B> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
enum Kind<B> {
    Plain {
        #[pin]
        inner: B,
    },
    Empty,
    Faulted {
        #[pin]
        inner: B,
        state: Box<Faulted>,
    },
}

struct Faulted {
    /// Bytes still allowed through, when truncating.
    remaining: Option<u64>,
    /// Truncated: nothing more comes from the inner body.
    done: bool,
    rate: Option<u64>,
    start: Option<Instant>,
    sent: u64,
    pending: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    _slot: Option<ActiveFault>,
}

impl<B> fmt::Debug for ChaosBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ChaosBody");
        match &self.kind {
            Kind::Plain { .. } => d.field("kind", &"plain"),
            Kind::Empty => d.field("kind", &"empty"),
            Kind::Faulted { state, .. } => d
                .field("throttle", &state.rate)
                .field("truncate", &state.remaining)
                .field("sent", &state.sent),
        };
        d.finish_non_exhaustive()
    }
}

impl<B> ChaosBody<B> {
    /// `inner`, untouched.
    pub fn plain(inner: B) -> Self {
        ChaosBody {
            kind: Kind::Plain { inner },
        }
    }

    /// An empty body: the body of an injected abort.
    pub fn empty() -> Self {
        ChaosBody { kind: Kind::Empty }
    }

    pub(crate) fn faulted(inner: B, faults: BodyFaults, slot: Option<ActiveFault>) -> Self {
        if !faults.is_some() {
            return Self::plain(inner);
        }
        ChaosBody {
            kind: Kind::Faulted {
                inner,
                state: Box::new(Faulted {
                    remaining: faults.truncate,
                    done: faults.truncate == Some(0),
                    rate: faults.throttle,
                    start: None,
                    sent: 0,
                    pending: None,
                    sleep: None,
                    _slot: slot,
                }),
            },
        }
    }
}

impl Faulted {
    /// The next piece of `pending` once the rate allows it.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        let chunk = self.pending.as_mut().expect("a pending chunk");
        let Some(rate) = self.rate else {
            return Poll::Ready(self.pending.take().expect("a pending chunk"));
        };
        let quantum = usize::try_from((rate / 10).max(1)).unwrap_or(usize::MAX);
        let n = chunk.len().min(quantum);
        let start = *self.start.get_or_insert_with(Instant::now);
        let nanos = u128::from(self.sent + n as u64) * 1_000_000_000 / u128::from(rate);
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        // A rate so low that the wait overflows the clock: wait a year.
        let release_at = start
            .checked_add(wait)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
        if Instant::now() < release_at {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(release_at)));
            if sleep.deadline() != release_at {
                sleep.as_mut().reset(release_at);
            }
            ready!(sleep.as_mut().poll(cx));
        }
        let piece = chunk.split_to(n);
        if chunk.is_empty() {
            self.pending = None;
        }
        self.sent += n as u64;
        Poll::Ready(piece)
    }

    /// Keeps what truncation allows of `data`.
    fn admit(&mut self, mut data: Bytes) -> Bytes {
        if let Some(rem) = &mut self.remaining {
            if data.len() as u64 >= *rem {
                data.truncate(usize::try_from(*rem).unwrap_or(usize::MAX));
                *rem = 0;
                self.done = true;
            } else {
                *rem -= data.len() as u64;
            }
        }
        data
    }
}

impl<B> Body for ChaosBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Plain { inner } => {
                let frame = ready!(inner.poll_frame(cx));
                Poll::Ready(
                    frame.map(|r| r.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))),
                )
            }
            KindProj::Faulted { mut inner, state } => {
                if state.start.is_none() {
                    state.start = Some(Instant::now());
                }
                loop {
                    if state.pending.is_some() {
                        let piece = ready!(state.poll_release(cx));
                        return Poll::Ready(Some(Ok(Frame::data(piece))));
                    }
                    if state.done {
                        return Poll::Ready(None);
                    }
                    let frame = match ready!(inner.as_mut().poll_frame(cx)) {
                        None => return Poll::Ready(None),
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                        Some(Ok(frame)) => frame,
                    };
                    match frame.into_data() {
                        Ok(mut data) => {
                            let bytes = state.admit(data.copy_to_bytes(data.remaining()));
                            if !bytes.is_empty() {
                                state.pending = Some(bytes);
                            }
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                            }
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Plain { inner } => inner.is_end_stream(),
            Kind::Faulted { inner, state } => {
                state.pending.is_none() && (state.done || inner.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Plain { inner } => inner.size_hint(),
            Kind::Faulted { inner, state } => {
                let pending = state.pending.as_ref().map_or(0, |p| p.len() as u64);
                if state.done {
                    return SizeHint::with_exact(pending);
                }
                let inner = inner.size_hint();
                let mut upper = inner.upper().map(|u| u + pending);
                if let Some(rem) = state.remaining {
                    upper = Some(upper.map_or(rem + pending, |u| u.min(rem + pending)));
                }
                let mut hint = SizeHint::new();
                if let Some(u) = upper {
                    hint.set_upper(u);
                }
                let lower = (inner.lower() + pending).min(upper.unwrap_or(u64::MAX));
                if state.remaining.is_none() {
                    hint.set_lower(lower);
                }
                hint
            }
        }
    }
}
