//! The endpoint model shared by discovery and load balancing.
//!
//! Discovery sources produce [`Change`]s of [`Endpoint`]s; balancers consume
//! them. An endpoint carries what Envoy's `LbEndpoint` does: an address, a
//! [`Locality`] (region, zone, subzone), a load-balancing weight (default
//! 100), a priority (0 is preferred), labels for subset routing (`version`,
//! `canary`, …) and a health status.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The default load-balancing weight.
pub const DEFAULT_WEIGHT: u32 = 100;

/// A cheap-to-clone, unique name of an endpoint within a service.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(Arc<str>);

impl EndpointId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for EndpointId {
    fn from(s: &str) -> Self {
        EndpointId(s.into())
    }
}

impl From<String> for EndpointId {
    fn from(s: String) -> Self {
        EndpointId(s.into())
    }
}

impl Borrow<str> for EndpointId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for EndpointId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Where an endpoint listens: a socket address, or a host name and port to
/// resolve when connecting.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// An IP address and port.
    Socket(SocketAddr),
    /// A host name and port.
    Host {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(addr) => fmt::Display::fmt(addr, f),
            Address::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Socket(addr)
    }
}

/// The error of parsing an [`Address`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidAddress {
    input: String,
}

impl fmt::Display for InvalidAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address {:?}: expected `ip:port` or `host:port`",
            self.input
        )
    }
}

impl std::error::Error for InvalidAddress {}

impl FromStr for Address {
    type Err = InvalidAddress;

    /// Parses `1.2.3.4:80`, `[::1]:80` or `host.example:80`.
    fn from_str(s: &str) -> Result<Self, InvalidAddress> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Address::Socket(addr));
        }
        let err = || InvalidAddress {
            input: s.to_owned(),
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
        let port = port.parse::<u16>().map_err(|_| err())?;
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !valid {
            return Err(err());
        }
        Ok(Address::Host {
            host: host.to_owned(),
            port,
        })
    }
}

/// Where an endpoint runs, as Envoy's `Locality`: region, zone, subzone. An
/// empty string means unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Locality {
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// The zone, e.g. `eu-west-1a`.
    pub zone: String,
    /// The subzone (rack, node), if any.
    pub subzone: String,
}

impl Locality {
    /// A locality in `region` and `zone`.
    pub fn new(region: impl Into<String>, zone: impl Into<String>) -> Self {
        Locality {
            region: region.into(),
            zone: zone.into(),
            subzone: String::new(),
        }
    }

    /// A locality known only by its zone.
    pub fn zone(zone: impl Into<String>) -> Self {
        Locality {
            zone: zone.into(),
            ..Locality::default()
        }
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.zone)?;
        if !self.subzone.is_empty() {
            write!(f, "/{}", self.subzone)?;
        }
        Ok(())
    }
}

/// An endpoint's health as its source reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Health {
    /// Serving.
    #[default]
    Healthy,
    /// Serving, but to be used only when healthy endpoints do not suffice.
    Degraded,
    /// Not serving.
    Unhealthy,
}

/// One instance of a service.
///
/// ```
/// use watertight_core::{Endpoint, Locality};
///
/// let e = Endpoint::new("10.0.0.7:8080".parse().unwrap())
///     .with_locality(Locality::new("eu-west-1", "eu-west-1a"))
///     .with_weight(50)
///     .with_label("version", "v2");
/// assert_eq!(e.id.as_str(), "10.0.0.7:8080");
/// assert_eq!(e.priority, 0);
/// assert_eq!(e.labels["version"], "v2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "serde_impl::EndpointConfig",
        into = "serde_impl::EndpointConfig"
    )
)]
pub struct Endpoint {
    /// Unique within the service; defaults to the address.
    pub id: EndpointId,
    /// Where it listens.
    pub addr: Address,
    /// Where it runs.
    pub locality: Locality,
    /// Load-balancing weight, at least 1; default 100.
    pub weight: u32,
    /// Priority level; 0 is preferred, higher levels take load as lower ones
    /// lose health.
    pub priority: u8,
    /// Labels for subset routing (`version`, `canary`, …).
    pub labels: BTreeMap<String, String>,
    /// Health as reported by the source.
    pub health: Health,
}

impl Endpoint {
    /// A healthy endpoint at `addr` with the defaults: id = the address,
    /// unknown locality, weight 100, priority 0, no labels.
    pub fn new(addr: Address) -> Self {
        Endpoint {
            id: EndpointId::from(addr.to_string()),
            addr,
            locality: Locality::default(),
            weight: DEFAULT_WEIGHT,
            priority: 0,
            labels: BTreeMap::new(),
            health: Health::Healthy,
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<EndpointId>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the locality.
    pub fn with_locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// Sets the weight (a weight of 0 is raised to 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the health.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }
}

/// One update from a discovery source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Adds an endpoint, or replaces the one with the same id.
    Insert(Endpoint),
    /// Removes the endpoint with this id.
    Remove(EndpointId),
    /// Replaces the whole set.
    Reset(Vec<Endpoint>),
}

/// Names the endpoint a load balancer chose for a request.
///
/// Balancers insert it as a request extension before calling the endpoint's
/// service, so per-endpoint layers (fault injection targeting a zone,
/// per-endpoint metrics) know where the request goes. Cloning is one
/// reference-count increment.
///
/// ```
/// use std::sync::Arc;
/// use watertight_core::endpoint::Selected;
/// use watertight_core::{Endpoint, Locality};
///
/// let e = Endpoint::new("10.0.0.7:8080".parse().unwrap())
///     .with_locality(Locality::zone("a"))
///     .with_label("version", "v2");
/// let selected = Selected::new(Arc::new(e));
/// assert_eq!(selected.id().as_str(), "10.0.0.7:8080");
/// assert_eq!(selected.locality().zone, "a");
/// assert_eq!(selected.labels()["version"], "v2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected(Arc<Endpoint>);

impl Selected {
    /// Names `endpoint`.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Selected(endpoint)
    }

    /// The chosen endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.0
    }

    /// The chosen endpoint, shared.
    pub fn shared(&self) -> &Arc<Endpoint> {
        &self.0
    }

    /// Its id.
    pub fn id(&self) -> &EndpointId {
        &self.0.id
    }

    /// Its locality.
    pub fn locality(&self) -> &Locality {
        &self.0.locality
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.0.labels
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::*;

    /// The wire form of an [`Endpoint`]: `addr` is required, everything else
    /// has the [`Endpoint::new`] defaults.
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct EndpointConfig {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        addr: String,
        #[serde(default)]
        locality: Locality,
        #[serde(default = "default_weight")]
        weight: u32,
        #[serde(default)]
        priority: u8,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        health: Health,
    }

    fn default_weight() -> u32 {
        DEFAULT_WEIGHT
    }

    impl TryFrom<EndpointConfig> for Endpoint {
        type Error = String;

        fn try_from(c: EndpointConfig) -> Result<Self, String> {
            let addr: Address = c
                .addr
                .parse()
                .map_err(|e: InvalidAddress| format!("field `addr`: {e}"))?;
            if c.weight == 0 {
                return Err("field `weight`: must be at least 1".to_owned());
            }
            let mut e = Endpoint::new(addr);
            if let Some(id) = c.id {
                if id.is_empty() {
                    return Err("field `id`: must not be empty".to_owned());
                }
                e.id = id.into();
            }
            e.locality = c.locality;
            e.weight = c.weight;
            e.priority = c.priority;
            e.labels = c.labels;
            e.health = c.health;
            Ok(e)
        }
    }

    impl From<Endpoint> for EndpointConfig {
        fn from(e: Endpoint) -> Self {
            EndpointConfig {
                id: Some(e.id.to_string()),
                addr: e.addr.to_string(),
                locality: e.locality,
                weight: e.weight,
                priority: e.priority,
                labels: e.labels,
                health: e.health,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "127.0.0.1:80".parse::<Address>().unwrap().to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(
            "[::1]:443".parse::<Address>().unwrap().to_string(),
            "[::1]:443"
        );
        assert_eq!(
            "api.svc.cluster.local:8080".parse::<Address>().unwrap(),
            Address::Host {
                host: "api.svc.cluster.local".into(),
                port: 8080
            }
        );
        for bad in ["", "host", "host:", "host:99999", ":80", "ho st:80"] {
            let e = bad.parse::<Address>().unwrap_err();
            assert!(e.to_string().contains("invalid address"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_weight_is_raised_to_one() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap()).with_weight(0);
        assert_eq!(e.weight, 1);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn endpoint_json_round_trip_and_errors() {
        let e: Endpoint = serde_json::from_str(
            r#"{"addr":"10.0.0.1:80","locality":{"zone":"a"},"weight":5,"labels":{"version":"v2"}}"#,
        )
        .unwrap();
        assert_eq!(e.id.as_str(), "10.0.0.1:80");
        assert_eq!(e.locality.zone, "a");
        assert_eq!(e.weight, 5);
        let back: Endpoint = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);

        let err = serde_json::from_str::<Endpoint>(r#"{"addr":"nowhere"}"#).unwrap_err();
        assert!(err.to_string().contains("field `addr`"), "{err}");
        let err = serde_json::from_str::<Endpoint>(r#"{"addr":"a:1","weight":0}"#).unwrap_err();
        assert!(err.to_string().contains("field `weight`"), "{err}");
        let err = serde_json::from_str::<Endpoint>(r#"{"addr":"a:1","wieght":3}"#).unwrap_err();
        assert!(err.to_string().contains("wieght"), "{err}");
    }
}
