//! Typed events, for tests and custom sinks.
//!
//! Register a listener with [`Builder::on_event`](crate::Builder::on_event).
//! It runs inside the balancer's `poll_ready`, on the task that drives the
//! balancer: keep it short. Outlier events are also kept in a bounded log,
//! read with [`BalancerHandle::outlier_log`](crate::BalancerHandle::outlier_log).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use watertight_core::{EndpointId, Locality};

use crate::outlier::Detection;

/// Something the balancer did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Outlier detection acted on an endpoint.
    Outlier(OutlierEvent),
    /// An endpoint's service failed its readiness check and was removed
    /// until discovery announces it again.
    Evicted(Evicted),
}

/// One outlier-detection decision about one endpoint.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OutlierEvent {
    /// The balancer's name.
    pub name: Arc<str>,
    /// When.
    pub at: Instant,
    /// The endpoint.
    pub endpoint: EndpointId,
    /// Its locality.
    pub locality: Locality,
    /// What happened.
    pub action: OutlierAction,
}

/// What outlier detection did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutlierAction {
    /// The endpoint was ejected for `duration`
    /// (`min(base · multiplier, max) + jitter`).
    Ejected {
        /// The detector.
        detection: Detection,
        /// How long the ejection lasts.
        duration: Duration,
        /// `k` after this ejection.
        multiplier: u32,
    },
    /// A detector found the endpoint an outlier but its enforcement
    /// percentage said not to eject.
    NotEnforced {
        /// The detector.
        detection: Detection,
    },
    /// A detector found the endpoint an outlier but `max_ejection_percent`
    /// allowed no more ejections.
    Overflow {
        /// The detector.
        detection: Detection,
    },
    /// The ejection ended; the endpoint is back in service.
    Unejected,
}

impl OutlierAction {
    /// The detector, for every action but `Unejected`.
    pub fn detection(&self) -> Option<Detection> {
        match *self {
            OutlierAction::Ejected { detection, .. }
            | OutlierAction::NotEnforced { detection }
            | OutlierAction::Overflow { detection } => Some(detection),
            OutlierAction::Unejected => None,
        }
    }
}

impl fmt::Display for OutlierAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutlierAction::Ejected {
                detection,
                duration,
                multiplier,
            } => write!(
                f,
                "ejected by {detection} for {duration:?} (multiplier {multiplier})"
            ),
            OutlierAction::NotEnforced { detection } => {
                write!(f, "detected by {detection}, not enforced")
            }
            OutlierAction::Overflow { detection } => {
                write!(f, "detected by {detection}, max ejection percent reached")
            }
            OutlierAction::Unejected => f.write_str("unejected"),
        }
    }
}

/// An endpoint removed because its readiness check failed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Evicted {
    /// The balancer's name.
    pub name: Arc<str>,
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The readiness error, displayed.
    pub error: String,
}

/// A listener for [`Event`]s.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;
