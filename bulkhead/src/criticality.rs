//! [`Criticality`]: how much a request matters when there is not room for
//! all of them.

use std::fmt;
use std::str::FromStr;

use watertight_core::ext::Extensions;

/// How critical a request is, carried as a request extension.
///
/// A [`PartitionedBulkhead`](crate::PartitionedBulkhead) sheds the least
/// critical requests first as utilisation nears its limit, the way Google's
/// servers shed by criticality ("Handling Overload", *Site Reliability
/// Engineering*, ch. 21): `Sheddable` requests (prefetches, batch work) go
/// first, then `Default` ones; `Critical` requests get the whole limit.
///
/// A request without the extension is [`Criticality::Default`]. Set it where
/// the request enters the service (from a header, a route, the caller's
/// identity):
///
/// ```
/// use watertight_bulkhead::Criticality;
/// use watertight_core::ext::Extensions;
///
/// # #[cfg(feature = "http")] {
/// let mut req = http::Request::new(());
/// assert_eq!(Criticality::of(&req), Criticality::Default);
/// req.insert_extension(Criticality::Sheddable);
/// assert_eq!(Criticality::of(&req), Criticality::Sheddable);
/// # }
/// assert_eq!("critical".parse::<Criticality>(), Ok(Criticality::Critical));
/// ```
///
/// The order is by importance: `Sheddable < Default < Critical`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Criticality {
    /// Shed first: work whose loss nobody notices at once.
    Sheddable,
    /// Ordinary requests; also every request without the extension.
    #[default]
    Default,
    /// Shed last: admitted up to the whole limit.
    Critical,
}

impl Criticality {
    /// The criticality a request carries, [`Criticality::Default`] if none.
    pub fn of<R: Extensions>(req: &R) -> Criticality {
        req.extension::<Criticality>().copied().unwrap_or_default()
    }

    /// `sheddable`, `default` or `critical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Criticality::Sheddable => "sheddable",
            Criticality::Default => "default",
            Criticality::Critical => "critical",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Criticality`] from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownCriticality(String);

impl fmt::Display for UnknownCriticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown criticality {:?}; expected `sheddable`, `default` or `critical`",
            self.0
        )
    }
}

impl std::error::Error for UnknownCriticality {}

impl FromStr for Criticality {
    type Err = UnknownCriticality;

    /// Parses `sheddable`, `default` or `critical`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        [
            Criticality::Sheddable,
            Criticality::Default,
            Criticality::Critical,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownCriticality(s.to_owned()))
    }
}
