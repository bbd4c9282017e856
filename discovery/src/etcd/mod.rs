//! etcd: endpoints as JSON values under a key prefix, and self-registration.
//!
//! Each key under the prefix holds one endpoint in the wire form of the
//! [file source](mod@crate::file) (`{"addr": "10.0.0.1:8080", "locality":
//! {"zone": "a"}, "weight": 50}`); the key names nothing by itself, the
//! endpoint's id is its `id` field (default: its address). A
//! [`Registration`] writes `<prefix><id>` under a lease.
//!
//! # The source
//!
//! [`Etcd`] follows the pattern of Kubernetes' reflectors and etcd's own
//! `clientv3` watchers: a range read of the prefix gives the initial set and
//! its revision; a watch from the next revision then gives every change, in
//! order. When the connection fails, the source yields a [`Backend`] error,
//! keeps its set, and reconnects after a `reconnect_backoff` delay (equal
//! jitter from 100 ms to 10 s by default), resuming the watch from the
//! revision after the last one it saw, so changes made meanwhile arrive as
//! ordinary changes. Once the watch is back it yields a [`Change::Reset`] of
//! the set it knows, so consumers know it is in sync again. If that revision
//! has been compacted away, etcd cancels the watch with the compaction
//! revision; the source then reads the whole prefix again and yields a
//! `Reset` of the new set.
//!
//! That protocol is [`PrefixWatch`], public for anyone who follows other
//! values under a prefix the same way (the fleet mode of
//! `watertight-chaos` follows its experiments with it).
//!
//! A value that is not a valid endpoint yields an [`InvalidEntry`] error
//! naming the key and is skipped: the key keeps the last valid endpoint it
//! held, if any, until it is deleted or fixed.
//!
//! # Registration
//!
//! [`RegistrationBuilder::register`] grants a lease of `ttl` (default 10 s), writes
//! this instance's endpoint under it, and keeps the lease alive every third
//! of its TTL from a background task. [`Registration::deregister`] revokes
//! the lease, which deletes the key at once: do it on graceful shutdown.
//! If the process dies, or the `Registration` is dropped without
//! deregistering, keep-alives stop and etcd deletes the key when the lease
//! expires, within the TTL. If etcd reports the lease gone (it expired while
//! the instance was cut off, or someone revoked it), the task grants a new
//! lease and registers again.
//!
//! # Building
//!
//! etcd-client compiles etcd's protobuf definitions, so building with
//! feature `etcd` needs `protoc` (Debian package `protobuf-compiler`).
//!
//! [`Backend`]: crate::error::Backend
//! [`InvalidEntry`]: crate::error::InvalidEntry
//! [`Change::Reset`]: watertight_core::Change::Reset

mod registration;
mod source;
mod watch;

pub use etcd_client;
pub use registration::{Registration, RegistrationBuilder};
pub use source::{Etcd, EtcdBuilder};
pub use watch::{PrefixEvent, PrefixWatch};

use std::time::Duration;

use etcd_client::ConnectOptions;
use watertight_core::{Backoff, Endpoint};

use crate::wire::WireEndpoint;

/// The connection options used when none are given: connect timeout 5 s,
/// HTTP/2 keep-alive every 10 s with a 5 s timeout, TCP keep-alive 30 s, so
/// an etcd that vanishes without closing the connection is noticed.
pub fn default_connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_tcp_keepalive(Duration::from_secs(30))
}

/// The delays between reconnections of a watch used when none are given:
/// equal jitter from 100 ms to 10 s.
pub fn default_reconnect_backoff() -> Backoff {
    Backoff::equal_jitter(Duration::from_millis(100), Duration::from_secs(10))
        .expect("a valid constant backoff")
}

/// Decodes a value as an endpoint; the error names the line, column and
/// field.
fn decode(value: &[u8]) -> Result<Endpoint, String> {
    let mut de = serde_json::Deserializer::from_slice(value);
    let wire: WireEndpoint = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = crate::wire::path_of(e.path());
        let inner = e.into_inner();
        match path {
            Some(path) => format!("field `{path}`: {inner}"),
            None => inner.to_string(),
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(wire.0)
}

/// The JSON value of an endpoint.
fn encode(e: &Endpoint) -> String {
    serde_json::to_string(e).expect("an endpoint serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_the_field_and_the_problem() {
        for (value, want) in [
            (&b"{not json"[..], "key must be a string"),
            (b"[]", "invalid type: sequence, expected an endpoint"),
            (br#"{"addr":"10.0.0.1:80","weight":0}"#, "field `weight`"),
            (br#"{"addr":"nowhere"}"#, "field `addr`"),
            (br#"{"weight":3}"#, "missing field `addr`"),
            (br#"{"addr":"10.0.0.1:80"} trailing"#, "trailing"),
        ] {
            let e = decode(value).unwrap_err();
            assert!(!e.contains("Fields") && !e.contains('?'), "{e}");
            assert!(e.contains(want), "{e}");
        }
        let e = decode(br#"{"addr":"10.0.0.1:80","weight":5}"#).unwrap();
        assert_eq!(e.weight, 5);
    }
}
