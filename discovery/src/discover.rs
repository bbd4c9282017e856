//! From a source of endpoint changes to a `tower::discover::Discover` of
//! services.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project::pin_project;
use tower::discover::Change as TowerChange;
use watertight_core::{Change, Endpoint, EndpointId};

use crate::set::{self, Set};
use crate::Error;

/// A [`tower::discover::Discover`] over a source: every endpoint becomes a
/// service built by `make(&Endpoint)`, keyed by its [`EndpointId`].
///
/// `Reset`s are turned into the insertions and removals that reach the new
/// set; an endpoint whose attributes change (weight, locality, labels…) is
/// inserted again under the same key, which tower's balancers treat as a
/// replacement; an insertion that changes nothing is dropped.
///
/// Source errors are dropped by default, because tower's balancers fail on a
/// discovery error while a watertight source keeps its set and carries on
/// (put a [`Guard`](crate::Guard) in front to count and trace them).
/// [`forward_errors`](Self::forward_errors) yields them instead.
///
/// ```
/// use std::convert::Infallible;
/// use tower::discover::Discover;
/// use watertight_core::Endpoint;
/// use watertight_discovery::{ServiceDiscover, Static};
///
/// let source = Static::new([Endpoint::new("10.0.0.1:80".parse().unwrap())]);
/// let discover = ServiceDiscover::new(source, |e: &Endpoint| {
///     let addr = e.addr.to_string();
///     tower::service_fn(move |_req: ()| {
///         let addr = addr.clone();
///         async move { Ok::<_, Infallible>(addr) }
///     })
/// });
/// fn is_discover<D: Discover>(_: &D) {}
/// is_discover(&discover);
/// ```
#[pin_project]
pub struct ServiceDiscover<St, F> {
    #[pin]
    source: St,
    make: F,
    known: Set,
    pending: VecDeque<Pending>,
    forward_errors: bool,
}

enum Pending {
    Insert(Endpoint),
    Remove(EndpointId),
}

impl<St: fmt::Debug, F> fmt::Debug for ServiceDiscover<St, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDiscover")
            .field("source", &self.source)
            .field("known", &self.known.len())
            .field("forward_errors", &self.forward_errors)
            .finish()
    }
}

impl<St, F> ServiceDiscover<St, F> {
    /// Builds services with `make` for the endpoints of `source`.
    pub fn new(source: St, make: F) -> Self {
        ServiceDiscover {
            source,
            make,
            known: Set::new(),
            pending: VecDeque::new(),
            forward_errors: false,
        }
    }

    /// Yields source errors as `Err` items instead of dropping them.
    pub fn forward_errors(mut self, forward: bool) -> Self {
        self.forward_errors = forward;
        self
    }

    /// The endpoints discovered so far.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.known.values()
    }

    /// The source.
    pub fn get_ref(&self) -> &St {
        &self.source
    }

    /// The source, mutably.
    pub fn get_mut(&mut self) -> &mut St {
        &mut self.source
    }

    /// The source.
    pub fn into_inner(self) -> St {
        self.source
    }
}

impl<St, F, S> Stream for ServiceDiscover<St, F>
where
    St: Stream<Item = Result<Change, Error>>,
    F: FnMut(&Endpoint) -> S,
{
    type Item = Result<TowerChange<EndpointId, S>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(p) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(match p {
                    Pending::Insert(e) => {
                        let svc = (this.make)(&e);
                        TowerChange::Insert(e.id, svc)
                    }
                    Pending::Remove(id) => TowerChange::Remove(id),
                })));
            }
            match futures_core::ready!(this.source.as_mut().poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => {
                    if *this.forward_errors {
                        return Poll::Ready(Some(Err(e)));
                    }
                    tracing::debug!(target: "watertight_discovery", error = %e, "discovery error dropped by the Discover adapter");
                }
                Some(Ok(Change::Insert(e))) => {
                    if this.known.get(&e.id) != Some(&e) {
                        this.known.insert(e.id.clone(), e.clone());
                        this.pending.push_back(Pending::Insert(e));
                    }
                }
                Some(Ok(Change::Remove(id))) => {
                    if this.known.remove(&id).is_some() {
                        this.pending.push_back(Pending::Remove(id));
                    }
                }
                Some(Ok(Change::Reset(list))) => {
                    let new = set::from_list(list);
                    let (upserts, removals) = set::diff(this.known, &new);
                    this.pending
                        .extend(upserts.into_iter().map(Pending::Insert));
                    this.pending
                        .extend(removals.into_iter().map(Pending::Remove));
                    *this.known = new;
                }
            }
        }
    }
}
