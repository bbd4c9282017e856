//! Typed request extensions, for layers that talk to each other through the
//! request.
//!
//! Some layers leave a note on the request for a layer further in: a load
//! balancer names the endpoint it chose ([`Selected`](crate::Selected)) so
//! fault injection can target a zone; a retry layer hands the balancer the
//! endpoints earlier attempts went to ([`Attempted`]) so a retry goes
//! elsewhere, as Envoy's `previous_hosts` retry predicate does; a server marks
//! a request's criticality for load shedding.
//!
//! [`Extensions`] is how a layer reads and writes such notes on any request
//! type. It is implemented for `http::Request` and `http::Response` (feature
//! `http`); a request type without extensions implements it with the default
//! methods, which find nothing and drop what is inserted, so the layers still
//! work and only the notes are lost.
//!
//! ```
//! use watertight_core::ext::Extensions;
//!
//! struct Plain(u32);
//! impl Extensions for Plain {}
//!
//! let mut req = Plain(7);
//! req.insert_extension(5u8);
//! assert_eq!(req.extension::<u8>(), None);
//! ```

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::EndpointId;

/// A request that can carry typed extensions. See the [module docs](self).
pub trait Extensions {
    /// The extension of type `T`, if the request carries one.
    fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        None
    }

    /// Adds `value`, replacing an extension of the same type.
    fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        let _ = value;
    }

    /// Whether inserted extensions are kept. Layers skip building notes for
    /// a request that would drop them (the default, `false`); a type that
    /// overrides the two methods above returns `true`.
    fn carries_extensions(&self) -> bool {
        false
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> Extensions for http::Request<B> {
    fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions().get::<T>()
    }

    fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.extensions_mut().insert(value);
    }

    fn carries_extensions(&self) -> bool {
        true
    }
}

/// Responses carry notes too: a retry layer marks a response it gave up on,
/// so an outer retry layer does not send the request again.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> Extensions for http::Response<B> {
    fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions().get::<T>()
    }

    fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.extensions_mut().insert(value);
    }

    fn carries_extensions(&self) -> bool {
        true
    }
}

/// The endpoints a request's earlier attempts (retries, hedges) went to.
///
/// A retry or hedging layer puts one on the request and every attempt carries
/// a clone of it; a balancer that finds it prefers an endpoint not yet tried
/// and records the one it picks. Clones share the list.
///
/// ```
/// use watertight_core::ext::Attempted;
/// use watertight_core::EndpointId;
///
/// let attempts = Attempted::new();
/// let seen_by_balancer = attempts.clone();
/// seen_by_balancer.record(EndpointId::from("10.0.0.1:80"));
/// assert!(attempts.contains("10.0.0.1:80"));
/// assert_eq!(attempts.len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct Attempted(Arc<Mutex<Vec<EndpointId>>>);

impl Attempted {
    /// An empty list.
    pub fn new() -> Self {
        Attempted::default()
    }

    /// Records that an attempt went to `id`.
    pub fn record(&self, id: EndpointId) {
        let mut ids = self.0.lock();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// Whether an attempt went to `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.0.lock().iter().any(|e| e.as_str() == id)
    }

    /// How many distinct endpoints were tried.
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Whether no endpoint was tried yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoints tried, in the order first tried.
    pub fn ids(&self) -> Vec<EndpointId> {
        self.0.lock().clone()
    }
}

impl fmt::Debug for Attempted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Attempted").field(&*self.0.lock()).finish()
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn http_requests_carry_extensions() {
        let mut req = http::Request::new(());
        req.insert_extension(Attempted::new());
        let a = req.extension::<Attempted>().unwrap().clone();
        a.record(EndpointId::from("a"));
        a.record(EndpointId::from("a"));
        assert!(req.extension::<Attempted>().unwrap().contains("a"));
        assert_eq!(a.ids(), [EndpointId::from("a")]);
        assert!(req.carries_extensions());
    }

    #[test]
    fn http_responses_carry_extensions() {
        let mut res = http::Response::new(());
        res.insert_extension(7u8);
        assert_eq!(res.extension::<u8>(), Some(&7));
        assert!(res.carries_extensions());
    }
}
