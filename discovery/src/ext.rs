use futures_core::Stream;
use watertight_core::{Change, Endpoint};

use crate::{Error, Guard, Guarded, ServiceDiscover};

/// Combinators for any discovery source: a stream of
/// `Result<Change, Error>`.
///
/// ```
/// use std::convert::Infallible;
/// use watertight_core::Endpoint;
/// use watertight_discovery::{Guard, SourceExt, Static};
///
/// let guard = Guard::builder().name("api").build().unwrap();
/// let discover = Static::new([Endpoint::new("10.0.0.1:80".parse().unwrap())])
///     .guarded(&guard)
///     .into_discover(|e: &Endpoint| {
///         let addr = e.addr.clone();
///         tower::service_fn(move |_req: ()| {
///             let addr = addr.clone();
///             async move { Ok::<_, Infallible>(addr) }
///         })
///     });
/// # drop(discover);
/// ```
pub trait SourceExt: Stream<Item = Result<Change, Error>> + Sized {
    /// Puts the source behind a [`Guard`]: last known good set,
    /// self-preservation and debouncing.
    fn guarded(self, guard: &Guard) -> Guarded<Self> {
        guard.wrap(self)
    }

    /// Adapts the source to `tower::discover::Discover`, building a service
    /// for each endpoint with `make`. See [`ServiceDiscover`].
    fn into_discover<F, S>(self, make: F) -> ServiceDiscover<Self, F>
    where
        F: FnMut(&Endpoint) -> S,
    {
        ServiceDiscover::new(self, make)
    }
}

impl<T: Stream<Item = Result<Change, Error>>> SourceExt for T {}
