//! Helpers shared by the discovery test binaries.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use watertight_core::{Change, Endpoint};
use watertight_discovery::Error;

/// How long a test waits for something a real file system, DNS server or
/// etcd should do in well under a second.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn ep(addr: &str) -> Endpoint {
    Endpoint::new(addr.parse().unwrap())
}

/// The next item, failing the test if none comes within [`WAIT`].
pub async fn next<S>(s: &mut S) -> Result<Change, Error>
where
    S: Stream<Item = Result<Change, Error>> + Unpin,
{
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("no discovery item in time")
        .expect("the source ended")
}

/// The next `Ok` change, skipping errors.
pub async fn next_change<S>(s: &mut S) -> Change
where
    S: Stream<Item = Result<Change, Error>> + Unpin,
{
    loop {
        if let Ok(c) = next(s).await {
            return c;
        }
    }
}

/// The next error, failing the test if a change comes first.
pub async fn next_error<S>(s: &mut S) -> Error
where
    S: Stream<Item = Result<Change, Error>> + Unpin,
{
    match next(s).await {
        Err(e) => e,
        Ok(c) => panic!("expected an error, got {c:?}"),
    }
}

/// The sorted ids of a `Reset`.
pub fn reset_ids(change: &Change) -> Vec<String> {
    match change {
        Change::Reset(list) => {
            let mut ids: Vec<_> = list.iter().map(|e| e.id.to_string()).collect();
            ids.sort();
            ids
        }
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// The sorted ids of the next item, which must be a `Reset`.
pub async fn next_reset_ids<S>(s: &mut S) -> Vec<String>
where
    S: Stream<Item = Result<Change, Error>> + Unpin,
{
    reset_ids(&next(s).await.unwrap())
}

/// The sorted ids of a set of endpoints.
pub fn ids(list: &[Endpoint]) -> Vec<String> {
    let mut ids: Vec<_> = list.iter().map(|e| e.id.to_string()).collect();
    ids.sort();
    ids
}

/// Polls `s` (which must not end) until `cond` holds of the items seen,
/// failing the test after [`WAIT`].
pub async fn until<S, F>(s: &mut S, mut cond: F) -> Vec<Result<Change, Error>>
where
    S: Stream<Item = Result<Change, Error>> + Unpin,
    F: FnMut(&[Result<Change, Error>]) -> bool,
{
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond(&seen) {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(item)) => seen.push(item),
            Ok(None) => panic!("the source ended; seen {seen:?}"),
            Err(_) => panic!("condition not met in time; seen {seen:?}"),
        }
    }
    seen
}
