//! [`BreakerGroup`]: breakers that may not all open at once.
//!
//! Per-endpoint breakers under a load balancer each judge their own
//! endpoint. When every endpoint fails at once (a brownout, a shared
//! dependency down, a slowdown of the whole cluster), every breaker trips,
//! every endpoint becomes unavailable, and a client that could have been
//! served by endpoints failing some of the time is served by none. Envoy's
//! outlier detection caps the share of hosts it ejects at once
//! (`max_ejection_percent`) for this reason, and its panic threshold sends
//! traffic to every host when too few are left.
//!
//! A group gives breakers the same cap: its members are the breakers built
//! with [`Builder::group`](crate::Builder::group) (every endpoint's breaker
//! of one client, say), and a member whose trip policy fires opens only if
//! `100 · (open + 1) / members <= max_open_percent`, or if no member is
//! open (so one can always open, as Envoy's outlier detection can always
//! eject one host). A member counts as open from the moment it trips until
//! it closes again (its half-open probing included). A refused trip leaves
//! the breaker closed, recording as before; it is counted
//! (`watertight_circuit_breaker_trips_refused_total`), traced at `DEBUG` and
//! reported as [`Event::TripRefused`](crate::event::Event::TripRefused), and
//! the breaker trips at a later failure once the group has room. Manual
//! states (`ForcedOpen` by hand) are not limited and do not count.
//!
//! ```
//! use watertight_circuit_breaker::{BreakerGroup, CircuitBreakerLayer, Mode};
//!
//! # fn main() -> Result<(), watertight_circuit_breaker::error::ConfigError> {
//! // At most a third of a client's endpoints out of rotation at once.
//! let group = BreakerGroup::new(34.0)?;
//! let per_endpoint = CircuitBreakerLayer::builder()
//!     .mode(Mode::Backpressure)
//!     .group(group.clone())
//!     .build()?;
//! # let _ = per_endpoint;
//! assert_eq!(group.members(), 0); // breakers join as the layer builds them
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use watertight_core::config::within_range;

use crate::error::{ConfigError, COMPONENT};
use crate::sync::{AtomicU32, AtomicU64, Ordering::*};

/// Breakers that may not all open at once; see the [module docs](self).
///
/// # Clone
///
/// Clones are the same group.
#[derive(Clone)]
pub struct BreakerGroup {
    inner: Arc<Inner>,
}

struct Inner {
    max_open_percent: f64,
    members: AtomicU32,
    open: AtomicU32,
    refused: AtomicU64,
}

impl fmt::Debug for BreakerGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerGroup")
            .field("max_open_percent", &self.inner.max_open_percent)
            .field("members", &self.members())
            .field("open", &self.open())
            .finish()
    }
}

impl BreakerGroup {
    /// A group whose members may be open at most `max_open_percent` of them
    /// at once (one always may).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `max_open_percent` unless it is in
    /// `[0, 100]`.
    pub fn new(max_open_percent: f64) -> Result<Self, ConfigError> {
        within_range(COMPONENT, "max_open_percent", max_open_percent, 0.0, 100.0)?;
        Ok(BreakerGroup {
            inner: Arc::new(Inner {
                max_open_percent,
                members: AtomicU32::new(0),
                open: AtomicU32::new(0),
                refused: AtomicU64::new(0),
            }),
        })
    }

    /// The cap, in percent of the members.
    pub fn max_open_percent(&self) -> f64 {
        self.inner.max_open_percent
    }

    /// Breakers in the group (alive).
    pub fn members(&self) -> u32 {
        self.inner.members.load(Acquire)
    }

    /// Members open or half-open now.
    pub fn open(&self) -> u32 {
        self.inner.open.load(Acquire)
    }

    /// Trips refused since the group was made.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Relaxed)
    }

    /// Whether `a` and `b` are the same group.
    pub fn same_group(a: &BreakerGroup, b: &BreakerGroup) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    pub(crate) fn join(&self) {
        self.inner.members.fetch_add(1, AcqRel);
    }

    pub(crate) fn leave(&self) {
        self.inner.members.fetch_sub(1, AcqRel);
    }

    /// Takes an open slot if the cap allows one more; counts a refusal
    /// otherwise.
    pub(crate) fn try_open(&self) -> bool {
        let members = f64::from(self.members());
        let mut open = self.inner.open.load(Acquire);
        loop {
            let allowed =
                open == 0 || 100.0 * f64::from(open + 1) <= self.inner.max_open_percent * members;
            if !allowed {
                self.inner.refused.fetch_add(1, Relaxed);
                return false;
            }
            match self
                .inner
                .open
                .compare_exchange_weak(open, open + 1, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) => open = now,
            }
        }
    }

    /// Gives an open slot back.
    pub(crate) fn closed(&self) {
        self.inner.open.fetch_sub(1, AcqRel);
    }
}
