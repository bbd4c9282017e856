//! Replayable HTTP request bodies.
//!
//! An `http::Request` with a streaming body cannot be cloned: the body is
//! read once, as it is sent. [`ReplayBody`] wraps a body and keeps what
//! streams through it, up to `max_replay_bytes` (default 64 KiB), so a retry
//! or a hedge can send the same bytes again: a copy made with
//! [`try_clone`](ReplayBody::try_clone) replays the kept chunks, then goes on
//! reading the original body where the first attempt stopped. The body
//! streams as it is read; nothing waits for it to be buffered.
//!
//! Once more than `max_replay_bytes` have streamed (or the body says up
//! front that it is larger), the kept bytes are dropped and `try_clone`
//! returns `None`: the request is sent once and not retried, and the retry
//! layer ends it with [`Reason::NotReplayable`](crate::Reason::NotReplayable).
//! linkerd's proxy replays request bodies the same way.
//!
//! [`ByReplay`] copies an `http::Request<ReplayBody<B>>` this way (it is the
//! copying piece of [`StandardPolicy::http`](crate::StandardPolicy::http));
//! [`ReplayBodyLayer`] wraps the bodies of every request in front of a retry
//! layer:
//!
//! ```
//! use std::convert::Infallible;
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, Layer};
//! use watertight_retry::replay::{ReplayBody, ReplayBodyLayer};
//! use watertight_retry::{RetryLayer, StandardPolicy};
//!
//! let client = service_fn(|_: http::Request<ReplayBody<Full<Bytes>>>| async {
//!     Ok::<_, Infallible>(http::Response::new(()))
//! });
//! let retry = RetryLayer::builder().policy(StandardPolicy::http()).build().unwrap();
//! let _svc = ReplayBodyLayer::new().layer(retry.layer(client));
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tower_layer::Layer;
use tower_service::Service;
use watertight_core::BoxError;

use crate::policy::CloneRequest;

/// The default replay limit: 64 KiB.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 * 1024;

/// A request body that can be sent again. See the [module docs](self).
///
/// # Clone
///
/// Not `Clone`: [`try_clone`](Self::try_clone) fails once the body outgrew
/// its limit.
pub struct ReplayBody<B> {
    shared: Arc<Mutex<State<B>>>,
    /// The next chunk this copy reads.
    pos: usize,
    trailers_sent: bool,
}

struct State<B> {
    source: Option<Pin<Box<B>>>,
    /// Every chunk read so far, while within the limit.
    chunks: Vec<Bytes>,
    /// Chunks read from the source so far (kept or not).
    read: usize,
    kept_bytes: usize,
    max: usize,
    /// The limit was passed: nothing is kept any more.
    overflowed: bool,
    /// The source ended (or sent its trailers).
    ended: bool,
    failed: bool,
    trailers: Option<HeaderMap>,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to 64 KiB for replays.
    pub fn new(body: B) -> Self {
        ReplayBody::with_limit(body, DEFAULT_MAX_REPLAY_BYTES)
    }

    /// Wraps `body`, keeping up to `max_replay_bytes` for replays.
    pub fn with_limit(body: B, max_replay_bytes: usize) -> Self {
        // A body that says it is larger than the limit is never kept.
        let overflowed = body.size_hint().lower() > max_replay_bytes as u64;
        ReplayBody {
            shared: Arc::new(Mutex::new(State {
                source: Some(Box::pin(body)),
                chunks: Vec::new(),
                read: 0,
                kept_bytes: 0,
                max: max_replay_bytes,
                overflowed,
                ended: false,
                failed: false,
                trailers: None,
            })),
            pos: 0,
            trailers_sent: false,
        }
    }
}

impl<B> ReplayBody<B> {
    /// A copy that sends the body again from its start, or `None` once the
    /// body passed its limit or failed.
    pub fn try_clone(&self) -> Option<Self> {
        let state = self.shared.lock();
        if state.overflowed || state.failed {
            return None;
        }
        Some(ReplayBody {
            shared: self.shared.clone(),
            pos: 0,
            trailers_sent: false,
        })
    }

    /// Whether the body passed its replay limit (so cannot be sent again).
    pub fn is_capped(&self) -> bool {
        self.shared.lock().overflowed
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ReplayBody")
            .field("pos", &self.pos)
            .field("read", &state.read)
            .field("kept_bytes", &state.kept_bytes)
            .field("max", &state.max)
            .field("overflowed", &state.overflowed)
            .field("ended", &state.ended)
            .finish()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        if this.pos < state.read {
            // Behind the source: replay what was kept.
            if state.overflowed {
                return Poll::Ready(Some(Err(Box::new(ReplayUnavailable::Overflowed))));
            }
            let chunk = state.chunks[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if state.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = state.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if state.failed {
            return Poll::Ready(Some(Err(Box::new(ReplayUnavailable::Failed))));
        }
        loop {
            let Some(source) = state.source.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match source.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    state.ended = true;
                    state.source = None;
                    this.trailers_sent = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    state.failed = true;
                    state.source = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    state.read += 1;
                    this.pos = state.read;
                    if !state.overflowed {
                        if state.kept_bytes + bytes.len() > state.max {
                            state.overflowed = true;
                            state.chunks = Vec::new();
                            state.kept_bytes = 0;
                        } else {
                            state.kept_bytes += bytes.len();
                            state.chunks.push(bytes.clone());
                        }
                    }
                    Frame::data(bytes)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        state.trailers = Some(trailers.clone());
                        state.ended = true;
                        state.source = None;
                        this.trailers_sent = true;
                        Frame::trailers(trailers)
                    }
                    // A frame kind this crate does not know: skip it.
                    Err(_) => continue,
                },
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.shared.lock();
        self.pos >= state.read && state.ended && (self.trailers_sent || state.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.shared.lock();
        let kept: u64 = if state.overflowed {
            0
        } else {
            state.chunks[self.pos.min(state.chunks.len())..]
                .iter()
                .map(|c| c.len() as u64)
                .sum()
        };
        match &state.source {
            Some(source) => {
                let s = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(s.lower() + kept);
                if let Some(upper) = s.upper() {
                    hint.set_upper(upper + kept);
                }
                hint
            }
            None => SizeHint::with_exact(kept),
        }
    }
}

/// Why a copy of a [`ReplayBody`] could not send the body again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayUnavailable {
    /// The body passed its replay limit while another copy was behind.
    Overflowed,
    /// The body failed while another copy read it.
    Failed,
}

impl fmt::Display for ReplayUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayUnavailable::Overflowed => "request body passed its replay limit",
            ReplayUnavailable::Failed => "request body failed on an earlier attempt",
        })
    }
}

impl std::error::Error for ReplayUnavailable {}

/// Copies an `http::Request<ReplayBody<B>>` for another attempt: the same
/// head and extensions, and a replay of the body; `None` once the body
/// passed its replay limit. The copying piece of
/// [`StandardPolicy::http`](crate::StandardPolicy::http).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByReplay;

impl<B> CloneRequest<http::Request<ReplayBody<B>>> for ByReplay {
    fn clone_request(
        &self,
        req: &http::Request<ReplayBody<B>>,
    ) -> Option<http::Request<ReplayBody<B>>> {
        let body = req.body().try_clone()?;
        let mut copy = http::Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// Wraps the body of every request in a [`ReplayBody`].
///
/// # Clone
///
/// Configuration only.
#[derive(Clone, Copy, Debug)]
pub struct ReplayBodyLayer {
    max_replay_bytes: usize,
}

impl Default for ReplayBodyLayer {
    fn default() -> Self {
        ReplayBodyLayer::new()
    }
}

impl ReplayBodyLayer {
    /// Keeps up to 64 KiB per request.
    pub const fn new() -> Self {
        ReplayBodyLayer {
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
        }
    }

    /// Keeps up to `max_replay_bytes` per request.
    pub const fn max_replay_bytes(mut self, max_replay_bytes: usize) -> Self {
        self.max_replay_bytes = max_replay_bytes;
        self
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = Replayable<S>;

    fn layer(&self, inner: S) -> Replayable<S> {
        Replayable {
            inner,
            max_replay_bytes: self.max_replay_bytes,
        }
    }
}

/// The service of [`ReplayBodyLayer`].
#[derive(Clone, Debug)]
pub struct Replayable<S> {
    inner: S,
    max_replay_bytes: usize,
}

impl<S> Replayable<S> {
    inner_service_accessors!();
}

impl<S, B> Service<http::Request<B>> for Replayable<S>
where
    S: Service<http::Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> S::Future {
        let max = self.max_replay_bytes;
        self.inner
            .call(req.map(|body| ReplayBody::with_limit(body, max)))
    }
}
