//! Endpoints whose service is not ready wait here, each polled only when
//! its service wakes it (as tower's `ReadyCache` does), so a thousand open
//! breakers cost nothing per request.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tower_service::Service;

/// Cancels a waiting endpoint that was removed.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// What a waiting endpoint resolves to.
pub(crate) enum Outcome<S, E> {
    Ready(S),
    Failed(E),
    Cancelled,
}

/// Resolves when `svc` is ready, with the service (its `poll_ready` having
/// returned `Ready`), or its readiness error.
pub(crate) struct PendingReady<S, Req> {
    pub(crate) svc: Option<S>,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) cancel: Arc<Cancel>,
    pub(crate) _req: PhantomData<fn(Req)>,
}

// The service is only ever used through `&mut`, never pinned.
impl<S, Req> Unpin for PendingReady<S, Req> {}

impl<S, Req> Future for PendingReady<S, Req>
where
    S: Service<Req>,
{
    type Output = (u32, u32, Outcome<S, S::Error>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.cancel.cancelled.load(Ordering::Acquire) {
            this.svc = None;
            return Poll::Ready((this.slot, this.gen, Outcome::Cancelled));
        }
        let svc = this.svc.as_mut().expect("polled after completion");
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let svc = this.svc.take().expect("present");
                Poll::Ready((this.slot, this.gen, Outcome::Ready(svc)))
            }
            Poll::Ready(Err(e)) => {
                this.svc = None;
                Poll::Ready((this.slot, this.gen, Outcome::Failed(e)))
            }
            Poll::Pending => {
                this.cancel.waker.register(cx.waker());
                if this.cancel.cancelled.load(Ordering::Acquire) {
                    this.svc = None;
                    return Poll::Ready((this.slot, this.gen, Outcome::Cancelled));
                }
                Poll::Pending
            }
        }
    }
}
