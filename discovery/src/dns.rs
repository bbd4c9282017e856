//! DNS: A/AAAA and SRV records, refreshed on their TTL.
//!
//! - [`Dns::a`] resolves a host name to its A and AAAA records; every
//!   address becomes an endpoint at the given port.
//! - [`Dns::srv`] resolves an SRV name (`_http._tcp.api.example.com`);
//!   every target becomes an endpoint at the record's port, with the record's
//!   priority (0 is preferred, as in DNS; capped at 255) and weight (a weight
//!   of 0 becomes 1). Targets are resolved to addresses, from the answer's
//!   additional section when the server sends one, with a lookup otherwise;
//!   [`DnsBuilder::resolve_targets`] keeps host names instead.
//!
//! # Kubernetes
//!
//! This source is the way to discover the pods of a Kubernetes headless
//! Service (`clusterIP: None`). Cluster DNS publishes one A record per ready
//! pod and, for each named port, an SRV record per pod named
//! `_<port name>._<protocol>.<service>.<namespace>.svc.<cluster domain>.`:
//!
//! ```
//! use watertight_discovery::Dns;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Service `api` in namespace `shop`, port named `http`:
//! let pods = Dns::srv("_http._tcp.api.shop.svc.cluster.local.").build()?;
//! // or, without SRV, the A records and a known port:
//! let pods = Dns::a("api.shop.svc.cluster.local.", 8080).build()?;
//! # Ok(()) }
//! ```
//!
//! This is how a client sees pods come and go without talking to the
//! Kubernetes API. CoreDNS serves these records with a 5 s TTL by default.
//!
//! # Refresh
//!
//! After each answer the source waits the smallest TTL in it, bounded by
//! `min_refresh` (default 1 s) and `max_refresh` (default 30 s), plus a
//! random jitter of up to `jitter` (default 10%) of that, so many clients do
//! not query in step. A name that does not exist (NXDOMAIN, or no records of
//! the type) is an empty set, re-queried after the negative TTL within the
//! same bounds. A failure (timeout, SERVFAIL, refused) is a [`Backend`]
//! error: the last set stays and the query is retried with `error_backoff`
//! (default equal jitter from 1 s to 30 s).
//!
//! The source yields a [`Change::Reset`] when the set changes, and after an
//! error even when it has not, so consumers know it has recovered.
//!
//! A resolver this source builds itself (the system's configuration, or
//! [`DnsBuilder::nameserver`]) has its cache cleared before every refresh,
//! so every refresh asks a server; a resolver passed in with
//! [`DnsBuilder::resolver`] keeps its cache, which answers until the TTL.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use watertight_core::backoff::Sequence;
use watertight_core::{config, Address, Backoff, Change, Endpoint, Locality};

use crate::driver::{self, BoxSource, Driver};
use crate::error::{Backend, ConfigError, COMPONENT};
use crate::set::{self, Set};
use crate::Error;

pub use hickory_resolver;

const TARGET: &str = "watertight_discovery";

#[derive(Clone, Debug)]
enum Query {
    Ip { host: String, port: u16 },
    Srv { name: String },
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Ip { host, port } => write!(f, "{host}:{port}"),
            Query::Srv { name } => write!(f, "SRV {name}"),
        }
    }
}

/// Builds a [`Dns`] source.
#[derive(Clone)]
pub struct DnsBuilder {
    query: Query,
    nameservers: Vec<SocketAddr>,
    resolver: Option<TokioResolver>,
    min_refresh: Duration,
    max_refresh: Duration,
    jitter: f64,
    error_backoff: Backoff,
    resolve_targets: bool,
    locality: Locality,
    labels: BTreeMap<String, String>,
    seed: Option<u64>,
    timeout: Option<Duration>,
}

impl fmt::Debug for DnsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsBuilder")
            .field("query", &self.query)
            .field("nameservers", &self.nameservers)
            .field("resolver", &self.resolver.as_ref().map(|_| ".."))
            .field("min_refresh", &self.min_refresh)
            .field("max_refresh", &self.max_refresh)
            .field("jitter", &self.jitter)
            .field("error_backoff", &self.error_backoff)
            .field("resolve_targets", &self.resolve_targets)
            .field("timeout", &self.timeout)
            .field("locality", &self.locality)
            .field("labels", &self.labels)
            .finish()
    }
}

impl DnsBuilder {
    fn new(query: Query) -> Self {
        DnsBuilder {
            query,
            nameservers: Vec::new(),
            resolver: None,
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(30),
            jitter: 0.1,
            error_backoff: Backoff::equal_jitter(Duration::from_secs(1), Duration::from_secs(30))
                .expect("valid constant backoff"),
            resolve_targets: true,
            locality: Locality::default(),
            labels: BTreeMap::new(),
            seed: None,
            timeout: None,
        }
    }

    /// How long one query waits for an answer before it fails, for a
    /// resolver this source builds; default the resolver's (5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Asks this name server (UDP, then TCP for truncated answers) instead of
    /// the system's; may be called more than once.
    pub fn nameserver(mut self, addr: SocketAddr) -> Self {
        self.nameservers.push(addr);
        self
    }

    /// Uses this resolver (and its cache) instead of building one.
    pub fn resolver(mut self, resolver: TokioResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The shortest wait between refreshes; default 1 s.
    pub fn min_refresh(mut self, d: Duration) -> Self {
        self.min_refresh = d;
        self
    }

    /// The longest wait between refreshes, whatever the TTL; default 30 s.
    pub fn max_refresh(mut self, d: Duration) -> Self {
        self.max_refresh = d;
        self
    }

    /// The largest random extra wait, as a share of the wait; default 0.1.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The waits between retries after failures; default equal jitter from
    /// 1 s to 30 s.
    pub fn error_backoff(mut self, backoff: Backoff) -> Self {
        self.error_backoff = backoff;
        self
    }

    /// SRV only: resolve targets to addresses (the default), or keep them as
    /// host names (`Address::Host`).
    pub fn resolve_targets(mut self, resolve: bool) -> Self {
        self.resolve_targets = resolve;
        self
    }

    /// The locality of every endpoint found; DNS has none of its own.
    pub fn locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// A label on every endpoint found.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Seeds the jitter and backoff randomness, for deterministic tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates and builds. Nothing is resolved until the stream is first
    /// polled.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field when the name is empty (`name`),
    /// `min_refresh` is zero or above `max_refresh`, `jitter` is not within
    /// 0 to 1, or `timeout` is zero.
    pub fn build(self) -> Result<Dns, ConfigError> {
        let name = match &self.query {
            Query::Ip { host, .. } => host,
            Query::Srv { name } => name,
        };
        config::name(COMPONENT, name.trim_end_matches('.'))?;
        config::non_zero(COMPONENT, "min_refresh", self.min_refresh)?;
        if self.min_refresh > self.max_refresh {
            return Err(ConfigError::new(
                COMPONENT,
                "max_refresh",
                "must not be less than `min_refresh`",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                COMPONENT,
                "jitter",
                "must be between 0 and 1",
            ));
        }
        if let Some(timeout) = self.timeout {
            config::non_zero(COMPONENT, "timeout", timeout)?;
        }
        let mut rng = match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let retries = self
            .error_backoff
            .sequence_with_rng(SmallRng::from_rng(&mut rng));
        let query = self.query.clone();
        let driver = DnsDriver {
            owns_resolver: self.resolver.is_none(),
            resolver: self.resolver,
            nameservers: self.nameservers,
            query: self.query,
            min_refresh: self.min_refresh,
            max_refresh: self.max_refresh,
            jitter: self.jitter,
            resolve_targets: self.resolve_targets,
            timeout: self.timeout,
            locality: self.locality,
            labels: self.labels,
            rng,
            retries,
            current: None,
            failing: false,
            wait: None,
        };
        Ok(Dns {
            query,
            inner: driver::drive(driver),
        })
    }
}

/// A source of endpoints from DNS records; see the [module docs](self).
///
/// This is the way to discover the pods of a Kubernetes headless Service:
/// [`Dns::srv`] on `_<port name>._<protocol>.<service>.<namespace>.svc.<cluster
/// domain>.`, e.g. `_http._tcp.api.shop.svc.cluster.local.`.
pub struct Dns {
    query: Query,
    inner: BoxSource,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns").field("query", &self.query).finish()
    }
}

impl Dns {
    /// The A and AAAA records of `host`, as endpoints at `port`. End the name
    /// with a dot to skip the resolver's search domains.
    pub fn a(host: impl Into<String>, port: u16) -> DnsBuilder {
        DnsBuilder::new(Query::Ip {
            host: host.into(),
            port,
        })
    }

    /// The SRV records of `name` (`_service._proto.domain`), as endpoints
    /// with the records' ports, priorities and weights.
    ///
    /// For a Kubernetes headless Service, the name is
    /// `_<port name>._<protocol>.<service>.<namespace>.svc.<cluster domain>.`:
    /// port `http` of Service `api` in namespace `shop` is
    /// `_http._tcp.api.shop.svc.cluster.local.`, one record per ready pod.
    pub fn srv(name: impl Into<String>) -> DnsBuilder {
        DnsBuilder::new(Query::Srv { name: name.into() })
    }
}

impl Stream for Dns {
    type Item = Result<Change, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct DnsDriver {
    resolver: Option<TokioResolver>,
    owns_resolver: bool,
    nameservers: Vec<SocketAddr>,
    query: Query,
    min_refresh: Duration,
    max_refresh: Duration,
    jitter: f64,
    resolve_targets: bool,
    timeout: Option<Duration>,
    locality: Locality,
    labels: BTreeMap<String, String>,
    rng: SmallRng,
    retries: Sequence,
    current: Option<Set>,
    failing: bool,
    /// How long to wait before the next query; `None` before the first.
    wait: Option<Duration>,
}

/// The endpoints an answer gives, and the smallest TTL in it.
struct Answer {
    endpoints: Vec<Endpoint>,
    ttl: Option<u32>,
}

impl DnsDriver {
    fn resolver(&mut self) -> Result<TokioResolver, NetError> {
        if let Some(r) = &self.resolver {
            return Ok(r.clone());
        }
        let provider = TokioRuntimeProvider::default();
        let mut builder = if self.nameservers.is_empty() {
            TokioResolver::builder(provider)?
        } else {
            let servers = self
                .nameservers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        if let Some(t) = self.timeout {
            opts.timeout = t;
        }
        let r = builder.build()?;
        self.resolver = Some(r.clone());
        Ok(r)
    }

    fn endpoint(&self, addr: Address) -> Endpoint {
        let mut e = Endpoint::new(addr).with_locality(self.locality.clone());
        e.labels = self.labels.clone();
        e
    }

    async fn resolve(&mut self) -> Result<Answer, NetError> {
        let resolver = self.resolver()?;
        if self.owns_resolver {
            resolver.clear_cache();
        }
        let answer = match self.query.clone() {
            Query::Ip { host, port } => {
                let lookup = resolver.lookup_ip(host.as_str()).await;
                let lookup = match lookup {
                    Ok(l) => l,
                    Err(e) if e.is_no_records_found() => return Ok(no_records(e)),
                    Err(e) => return Err(e),
                };
                let ttl = lookup
                    .as_lookup()
                    .answers()
                    .iter()
                    .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                    .map(|r| r.ttl)
                    .min();
                let endpoints = lookup
                    .iter()
                    .map(|ip| self.endpoint(Address::Socket(SocketAddr::new(ip, port))))
                    .collect();
                Answer { endpoints, ttl }
            }
            Query::Srv { name } => {
                let lookup = match resolver.srv_lookup(name.as_str()).await {
                    Ok(l) => l,
                    Err(e) if e.is_no_records_found() => return Ok(no_records(e)),
                    Err(e) => return Err(e),
                };
                let mut ttl = None::<u32>;
                let mut min_ttl = |t: u32| ttl = Some(ttl.map_or(t, |m| m.min(t)));
                // Addresses the server sent along, by target name.
                let mut glue: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
                for r in lookup.additionals() {
                    let ip = match &r.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    glue.entry(r.name.to_ascii().to_ascii_lowercase())
                        .or_default()
                        .push(ip);
                }
                let mut endpoints = Vec::new();
                for r in lookup.answers() {
                    let RData::SRV(srv) = &r.data else { continue };
                    min_ttl(r.ttl);
                    let target = srv.target.to_ascii();
                    let host = target.trim_end_matches('.').to_owned();
                    let addrs: Vec<Address> = if !self.resolve_targets {
                        vec![Address::Host {
                            host: host.clone(),
                            port: srv.port,
                        }]
                    } else if let Some(ips) = glue.get(&target.to_ascii_lowercase()) {
                        ips.iter()
                            .map(|ip| Address::Socket(SocketAddr::new(*ip, srv.port)))
                            .collect()
                    } else {
                        match resolver.lookup_ip(srv.target.clone()).await {
                            Ok(ips) => {
                                for r in ips.as_lookup().answers() {
                                    min_ttl(r.ttl);
                                }
                                ips.iter()
                                    .map(|ip| Address::Socket(SocketAddr::new(ip, srv.port)))
                                    .collect()
                            }
                            // A target without addresses serves nothing.
                            Err(e) if e.is_no_records_found() => Vec::new(),
                            Err(e) => return Err(e),
                        }
                    };
                    for addr in addrs {
                        let mut e = self
                            .endpoint(addr)
                            .with_priority(u8::try_from(srv.priority).unwrap_or(u8::MAX))
                            .with_weight(u32::from(srv.weight));
                        e.labels.insert("srv_target".to_owned(), host.clone());
                        endpoints.push(e);
                    }
                }
                Answer { endpoints, ttl }
            }
        };
        Ok(answer)
    }

    /// The wait before the next refresh after a TTL of `ttl` seconds.
    fn refresh_after(&mut self, ttl: Option<u32>) -> Duration {
        refresh_wait(
            ttl,
            self.min_refresh,
            self.max_refresh,
            self.jitter,
            &mut self.rng,
        )
    }
}

/// The TTL (or `min` without one) bounded by `min` and `max`, plus up to
/// `jitter` of it at random.
fn refresh_wait(
    ttl: Option<u32>,
    min: Duration,
    max: Duration,
    jitter: f64,
    rng: &mut SmallRng,
) -> Duration {
    let base = ttl
        .map_or(min, |t| Duration::from_secs(u64::from(t)))
        .clamp(min, max);
    base + base.mul_f64(jitter * rng.random::<f64>())
}

fn no_records(e: NetError) -> Answer {
    let ttl = e.into_soa().map(|soa| soa.data.minimum);
    Answer {
        endpoints: Vec::new(),
        ttl,
    }
}

impl Driver for DnsDriver {
    async fn next(&mut self) -> Result<Change, Error> {
        loop {
            if let Some(wait) = self.wait {
                tokio::time::sleep(wait).await;
            }
            match self.resolve().await {
                Err(e) => {
                    self.failing = true;
                    let wait = self.retries.next_delay();
                    self.wait = Some(wait);
                    tracing::warn!(target: TARGET, query = %self.query, error = %e, retry_in = ?wait, "DNS lookup failed; keeping the last set");
                    return Err(Backend::new("dns", self.query.to_string(), e).into());
                }
                Ok(answer) => {
                    self.retries.reset();
                    let wait = self.refresh_after(answer.ttl);
                    self.wait = Some(wait);
                    let new = set::from_list(answer.endpoints);
                    if !self.failing && self.current.as_ref() == Some(&new) {
                        tracing::trace!(target: TARGET, query = %self.query, next_in = ?wait, "DNS answer unchanged");
                        continue;
                    }
                    self.failing = false;
                    tracing::debug!(target: TARGET, query = %self.query, endpoints = new.len(), next_in = ?wait, "DNS answer changed");
                    let list = new.values().cloned().collect();
                    self.current = Some(new);
                    return Ok(Change::Reset(list));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_wait_is_the_bounded_ttl_plus_jitter() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = SmallRng::seed_from_u64(1);
        for (ttl, base) in [
            (Some(5), 5),
            (Some(0), 1),
            (None, 1),
            (Some(3600), 30),
            (Some(u32::MAX), 30),
        ] {
            let base = Duration::from_secs(base);
            let waits: Vec<Duration> = (0..100)
                .map(|_| refresh_wait(ttl, min, max, 0.1, &mut rng))
                .collect();
            for w in &waits {
                assert!(*w >= base && *w <= base.mul_f64(1.1), "{ttl:?}: {w:?}");
            }
            // Spread, so clients that started together drift apart.
            let spread = *waits.iter().max().unwrap() - *waits.iter().min().unwrap();
            assert!(spread > base.mul_f64(0.05), "{ttl:?}: spread {spread:?}");
            assert_eq!(
                refresh_wait(ttl, min, max, 0.0, &mut rng),
                base,
                "no jitter"
            );
        }
    }
}
