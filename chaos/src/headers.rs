//! Faults asked for by the request itself, in headers.
//!
//! Envoy's fault filter lets a caller ask for a fault per request with
//! `x-envoy-fault-delay-request`, `x-envoy-fault-abort-request` and their
//! `-percentage` companions, so a test can exercise one request's failure
//! path end to end. These are the same idea:
//!
//! | header | effect |
//! |---|---|
//! | `x-watertight-fault-delay-ms: 250` | delay the request 250 ms (capped by [`HeaderFaults::max_delay`]) |
//! | `x-watertight-fault-delay-percent: 50` | on this share of such requests (default 100) |
//! | `x-watertight-fault-abort: 503` | answer HTTP 503 instead of calling the service |
//! | `x-watertight-fault-abort-grpc: 14` | answer gRPC status 14 (UNAVAILABLE) instead |
//! | `x-watertight-fault-abort-percent: 10` | on this share of such requests (default 100) |
//! | `x-watertight-fault-throttle-bps: 1024` | stream the response body at 1,024 bytes/s ([`HttpChaos`](crate::HttpChaos)) |
//! | `x-watertight-fault-truncate-bytes: 100` | end the response body after 100 bytes ([`HttpChaos`](crate::HttpChaos)) |
//!
//! They are **off** unless enabled with
//! [`ControllerBuilder::header_faults`](crate::ControllerBuilder::header_faults)
//! or [`ChaosController::enable_header_faults`](crate::ChaosController::enable_header_faults):
//! anyone who can send a request could otherwise inject faults. Enabled,
//! they count against `max_active_faults` like any fault, and
//! [`halt_all`](crate::ChaosController::halt_all) turns them off again. A
//! header whose value does not parse (or is out of range) is ignored.

use std::time::Duration;

use crate::fault::Percent;
use crate::target::Inspect;

/// Delay, in milliseconds.
pub const DELAY_MS: &str = "x-watertight-fault-delay-ms";
/// Share of requests delayed, a percentage.
pub const DELAY_PERCENT: &str = "x-watertight-fault-delay-percent";
/// HTTP status to abort with.
pub const ABORT: &str = "x-watertight-fault-abort";
/// gRPC status to abort with.
pub const ABORT_GRPC: &str = "x-watertight-fault-abort-grpc";
/// Share of requests aborted, a percentage.
pub const ABORT_PERCENT: &str = "x-watertight-fault-abort-percent";
/// Response body rate, bytes per second.
pub const THROTTLE_BPS: &str = "x-watertight-fault-throttle-bps";
/// Response body length limit, in bytes.
pub const TRUNCATE_BYTES: &str = "x-watertight-fault-truncate-bytes";

/// Settings of header-triggered faults; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderFaults {
    /// The longest delay a header may ask for; longer asks are cut to it.
    /// Default 10 s.
    pub max_delay: Duration,
}

impl Default for HeaderFaults {
    fn default() -> Self {
        HeaderFaults {
            max_delay: Duration::from_secs(10),
        }
    }
}

impl HeaderFaults {
    /// The defaults.
    pub fn new() -> Self {
        HeaderFaults::default()
    }

    /// The longest delay a header may ask for.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }
}

/// What a request's headers ask for, before the dice.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Asked {
    pub(crate) delay: Option<(Duration, Percent)>,
    pub(crate) abort_http: Option<(u16, Percent)>,
    pub(crate) abort_grpc: Option<(u16, Percent)>,
    pub(crate) throttle: Option<u64>,
    pub(crate) truncate: Option<u64>,
}

impl Asked {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Asked::default()
    }
}

fn parse<T: std::str::FromStr>(v: Option<&[u8]>) -> Option<T> {
    std::str::from_utf8(v?).ok()?.trim().parse().ok()
}

fn percent<R: Inspect + ?Sized>(req: &R, name: &str) -> Option<Percent> {
    match req.header(name) {
        None => Some(Percent::ALL),
        Some(v) => Percent::new(parse::<f64>(Some(v))?).ok(),
    }
}

impl HeaderFaults {
    pub(crate) fn read<R: Inspect + ?Sized>(&self, req: &R) -> Asked {
        let mut asked = Asked::default();
        if let Some(ms) = parse::<u64>(req.header(DELAY_MS)) {
            if let Some(p) = percent(req, DELAY_PERCENT) {
                let delay = Duration::from_millis(ms).min(self.max_delay);
                if !delay.is_zero() {
                    asked.delay = Some((delay, p));
                }
            }
        }
        let abort_percent = || percent(req, ABORT_PERCENT);
        if let Some(s) = parse::<u16>(req.header(ABORT)).filter(|s| (200..=599).contains(s)) {
            asked.abort_http = abort_percent().map(|p| (s, p));
        } else if let Some(g) =
            parse::<u16>(req.header(ABORT_GRPC)).filter(|g| (1..=16).contains(g))
        {
            asked.abort_grpc = abort_percent().map(|p| (g, p));
        }
        asked.throttle = parse::<u64>(req.header(THROTTLE_BPS)).filter(|b| *b > 0);
        asked.truncate = parse::<u64>(req.header(TRUNCATE_BYTES));
        asked
    }
}
