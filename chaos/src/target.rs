//! Which requests an experiment may touch: its blast radius.
//!
//! A [`Target`] matches a request when every matcher it sets matches (an
//! empty target matches every request):
//!
//! - request matchers, read through [`Inspect`]: `method`, `path_prefix`,
//!   and `headers` (each named header present with exactly that value);
//! - endpoint matchers: `region`, `zone`, `subzone` and `labels` (a subset
//!   of the endpoint's labels), read from the
//!   [`Selected`] request extension a load
//!   balancer sets (or the user does), and otherwise from the instance's
//!   own endpoint given to
//!   [`ControllerBuilder::instance`](crate::ControllerBuilder::instance). A
//!   request with neither does not match a target with endpoint matchers.
//!
//! The request matchers follow Envoy's route and header matchers, the
//! endpoint matchers its locality model; targeting a zone through the
//! endpoint a balancer picked is how Netflix's ChAP confines an experiment
//! to a slice of traffic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use watertight_core::ext::Extensions;
use watertight_core::{Endpoint, Selected};

/// What the chaos layer reads from a request: its method, path and headers
/// when it has them, and its [`Extensions`].
///
/// Implemented for `http::Request` (feature `http`). Any other request type
/// implements it with the default methods, which find nothing, so only
/// targets without request matchers apply to it:
///
/// ```
/// use watertight_chaos::Inspect;
/// use watertight_core::ext::Extensions;
///
/// struct Query(String);
/// impl Extensions for Query {}
/// impl Inspect for Query {}
/// ```
pub trait Inspect: Extensions {
    /// The request method, upper case (`GET`).
    fn method(&self) -> Option<&str> {
        None
    }

    /// The request path (`/api/users`).
    fn path(&self) -> Option<&str> {
        None
    }

    /// The value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&[u8]> {
        let _ = name;
        None
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> Inspect for http::Request<B> {
    #[inline]
    fn method(&self) -> Option<&str> {
        Some(self.method().as_str())
    }

    #[inline]
    fn path(&self) -> Option<&str> {
        Some(self.uri().path())
    }

    #[inline]
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().get(name).map(|v| v.as_bytes())
    }
}

/// The requests an experiment applies to; see the [module docs](self).
///
/// Serialized as the `target` of an experiment
/// [document](crate::experiment): every field optional, unknown fields
/// refused. [`Experiment::validate`](crate::Experiment::validate) checks
/// the values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Target {
    /// The request method, upper case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A prefix of the request path, starting with `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Headers (lower-case names) that must be present with exactly these
    /// values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The endpoint's region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The endpoint's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The endpoint's subzone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subzone: Option<String>,
    /// Labels the endpoint must carry with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Target {
    /// A target matching every request.
    pub fn all() -> Self {
        Target::default()
    }

    /// Requests with this method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Requests whose path starts with `prefix`.
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// Requests carrying header `name` with exactly `value`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Requests to an endpoint in `region`.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Requests to an endpoint in `zone`.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Requests to an endpoint in `subzone`.
    pub fn subzone(mut self, subzone: impl Into<String>) -> Self {
        self.subzone = Some(subzone.into());
        self
    }

    /// Requests to an endpoint labelled `key = value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Whether a request matcher (method, path prefix, headers) is set.
    pub fn has_request_matchers(&self) -> bool {
        self.method.is_some() || self.path_prefix.is_some() || !self.headers.is_empty()
    }

    /// Whether an endpoint matcher (locality, labels) is set.
    pub fn has_endpoint_matchers(&self) -> bool {
        self.region.is_some()
            || self.zone.is_some()
            || self.subzone.is_some()
            || !self.labels.is_empty()
    }

    /// Whether `req` is in the target; `instance` is the endpoint the
    /// service itself runs as, used when the request names none.
    #[inline]
    pub fn matches<R: Inspect + ?Sized>(&self, req: &R, instance: Option<&Endpoint>) -> bool {
        self.matches_request(req)
            && (!self.has_endpoint_matchers() || self.matches_endpoint(endpoint_of(req, instance)))
    }

    #[inline]
    pub(crate) fn matches_request<R: Inspect + ?Sized>(&self, req: &R) -> bool {
        if let Some(m) = &self.method {
            if req.method() != Some(m.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.path_prefix {
            if !req.path().is_some_and(|path| path.starts_with(p.as_str())) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, value)| req.header(name) == Some(value.as_bytes()))
    }

    /// Whether the endpoint matches; `None` matches only a target without
    /// endpoint matchers.
    #[inline]
    pub(crate) fn matches_endpoint(&self, endpoint: Option<&Endpoint>) -> bool {
        if !self.has_endpoint_matchers() {
            return true;
        }
        let Some(e) = endpoint else { return false };
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.region, &e.locality.region)
            && eq(&self.zone, &e.locality.zone)
            && eq(&self.subzone, &e.locality.subzone)
            && self
                .labels
                .iter()
                .all(|(k, v)| e.labels.get(k).is_some_and(|have| have == v))
    }

    /// Checks the matchers' syntax, naming the field (`target.method`,
    /// `target.headers.<name>`…).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, r: &str| Err((format!("target.{f}"), r.to_owned()));
        if let Some(m) = &self.method {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
                return err("method", "must be an upper-case HTTP method such as `GET`");
            }
        }
        if let Some(p) = &self.path_prefix {
            if !p.starts_with('/') {
                return err("path_prefix", "must start with `/`");
            }
        }
        for name in self.headers.keys() {
            let token = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
                });
            if !token {
                return Err((
                    format!("target.headers.{name}"),
                    "must be a lower-case header name".to_owned(),
                ));
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() {
                return err("labels", "must not have an empty key");
            }
        }
        Ok(())
    }
}

/// The endpoint a request goes to: the balancer's choice, else the
/// instance's own.
#[inline]
pub(crate) fn endpoint_of<'a, R: Inspect + ?Sized>(
    req: &'a R,
    instance: Option<&'a Endpoint>,
) -> Option<&'a Endpoint> {
    req.extension::<Selected>()
        .map(Selected::endpoint)
        .or(instance)
}
