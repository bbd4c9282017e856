use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions, WatchResponse,
    WatchStream,
};
use tokio::time::Instant;
use watertight_core::backoff::Sequence;

/// What a [`PrefixWatch`] saw next.
#[derive(Debug)]
#[non_exhaustive]
pub enum PrefixEvent {
    /// Every key under the prefix, read at `revision`: it replaces whatever
    /// came before. The first event, and again after etcd compacted the
    /// history a watch was to resume from, or after
    /// [`PrefixWatch::resync`].
    Snapshot {
        /// The revision of the read; the watch follows from the next one.
        revision: i64,
        /// The keys and their values, in key order.
        kvs: Vec<KeyValue>,
    },
    /// A watch is established from the revision after `revision`, after a
    /// [`Snapshot`](Self::Snapshot) or on reconnection; on reconnection the
    /// changes made while disconnected follow as ordinary events.
    Watching {
        /// The last revision seen.
        revision: i64,
    },
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted; the value is empty and `mod_revision` is that of
    /// the deletion.
    Delete(KeyValue),
    /// etcd compacted its history past the revision the watch was to resume
    /// from: a [`Snapshot`](Self::Snapshot) follows.
    Compacted {
        /// The last revision seen.
        revision: i64,
        /// The revision etcd compacted up to.
        compacted: i64,
    },
    /// etcd could not be reached, or the connection or the watch failed. The
    /// next call to [`PrefixWatch::next`] waits `retry_in`, then reconnects
    /// and resumes after the last revision seen.
    Disconnected {
        /// What failed.
        error: etcd_client::Error,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
}

/// Follows every key under an etcd prefix through outages and compaction:
/// the protocol of the [`Etcd`](super::Etcd) source (see the
/// [module docs](super)), for values of any kind.
///
/// A range read gives the keys and their revision
/// ([`PrefixEvent::Snapshot`]); a watch from the next revision then gives
/// every change, in order. When the connection fails, [`next`](Self::next)
/// reports it ([`PrefixEvent::Disconnected`]), waits a delay of the
/// reconnection backoff, reconnects and resumes the watch after the last
/// revision seen; the backoff starts over once a watch is established. If
/// etcd compacted that revision away, it reads the prefix again. Nothing
/// connects before the first call to `next`.
///
/// ```no_run
/// use watertight_discovery::etcd::{self, PrefixEvent, PrefixWatch};
///
/// # async fn demo() {
/// let mut watch = PrefixWatch::new(
///     ["http://127.0.0.1:2379"],
///     "/config/",
///     etcd::default_connect_options(),
///     etcd::default_reconnect_backoff().sequence(),
/// );
/// loop {
///     match watch.next().await {
///         PrefixEvent::Snapshot { kvs, .. } => println!("{} keys", kvs.len()),
///         PrefixEvent::Put(kv) => println!("{:?} = {:?}", kv.key_str(), kv.value_str()),
///         PrefixEvent::Delete(kv) => println!("{:?} deleted", kv.key_str()),
///         other => println!("{other:?}"),
///     }
/// }
/// # }
/// ```
pub struct PrefixWatch {
    endpoints: Vec<String>,
    prefix: String,
    options: ConnectOptions,
    retries: Sequence,
    client: Option<Client>,
    watch: Option<WatchStream>,
    /// The last revision seen; the watch resumes after it.
    revision: i64,
    /// The next connection reads the whole prefix.
    resync: bool,
    /// No attempt before this instant.
    retry_at: Option<Instant>,
    pending: VecDeque<PrefixEvent>,
}

impl fmt::Debug for PrefixWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixWatch")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("revision", &self.revision)
            .field("connected", &self.watch.is_some())
            .finish()
    }
}

impl PrefixWatch {
    /// A watch of the keys under `prefix` on the etcd cluster at
    /// `endpoints` (`http://host:2379`), reconnecting after the delays of
    /// `reconnect`.
    pub fn new<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        prefix: impl Into<String>,
        options: ConnectOptions,
        reconnect: Sequence,
    ) -> Self {
        PrefixWatch {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            options,
            retries: reconnect,
            client: None,
            watch: None,
            revision: 0,
            resync: true,
            retry_at: None,
            pending: VecDeque::new(),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The revision of the last snapshot or event [`next`](Self::next)
    /// returned; 0 before the first snapshot.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The connection the watch uses, for lookups while acting on an event
    /// (a lease's time to live); `None` after a
    /// [`PrefixEvent::Disconnected`], until the next event.
    pub fn client(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    /// Gives up the connection because an event could not be acted on (a
    /// lookup through [`client`](Self::client) failed): the next event is a
    /// [`PrefixEvent::Disconnected`] with `error`, and once reconnected a
    /// [`PrefixEvent::Snapshot`] of the whole prefix follows, so nothing
    /// stays missed.
    pub fn resync(&mut self, error: etcd_client::Error) {
        self.resync = true;
        // The snapshot covers the events still queued.
        self.pending.clear();
        self.disconnect(error);
    }

    /// The next event; see [`PrefixEvent`]. Never ends: failures are
    /// reported and retried.
    pub async fn next(&mut self) -> PrefixEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                match &event {
                    PrefixEvent::Snapshot { revision, .. } => self.revision = *revision,
                    PrefixEvent::Put(kv) | PrefixEvent::Delete(kv) => {
                        self.revision = self.revision.max(kv.mod_revision());
                    }
                    _ => {}
                }
                return event;
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            let Some(watch) = self.watch.as_mut() else {
                if let Err(e) = self.establish().await {
                    self.disconnect(e);
                }
                continue;
            };
            match watch.message().await {
                Ok(Some(resp)) => self.on_response(resp),
                Ok(None) => self.disconnect(etcd_client::Error::WatchError(
                    "watch stream closed by the server".to_owned(),
                )),
                Err(e) => self.disconnect(e),
            }
        }
    }

    /// The connection is gone: report it and retry later.
    fn disconnect(&mut self, error: etcd_client::Error) {
        let retry_in = self.retries.next_delay();
        self.client = None;
        self.watch = None;
        self.retry_at = Some(Instant::now() + retry_in);
        self.pending
            .push_back(PrefixEvent::Disconnected { error, retry_in });
    }

    /// Connects if needed, reads the prefix if needed, and starts the watch.
    async fn establish(&mut self) -> Result<(), etcd_client::Error> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => Client::connect(&self.endpoints, Some(self.options.clone())).await?,
        };
        // The read counts only once the watch that follows it is
        // established: consumers act on a snapshot with a live connection.
        let snapshot = if self.resync {
            let mut resp = client
                .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await?;
            Some((resp.header().map_or(0, |h| h.revision()), resp.take_kvs()))
        } else {
            None
        };
        let from = snapshot
            .as_ref()
            .map_or(self.revision, |(revision, _)| *revision);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from + 1);
        let watch = client.watch(self.prefix.as_str(), Some(options)).await?;
        if let Some((revision, kvs)) = snapshot {
            self.resync = false;
            self.pending
                .push_back(PrefixEvent::Snapshot { revision, kvs });
        }
        self.client = Some(client);
        self.watch = Some(watch);
        Ok(())
    }

    fn on_response(&mut self, resp: WatchResponse) {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                self.watch = None;
                self.resync = true;
                self.pending.push_back(PrefixEvent::Compacted {
                    revision: self.revision,
                    compacted: resp.compact_revision(),
                });
            } else {
                let reason = format!("watch canceled: {}", resp.cancel_reason());
                self.disconnect(etcd_client::Error::WatchError(reason));
            }
            return;
        }
        if resp.created() {
            self.retries.reset();
            self.pending.push_back(PrefixEvent::Watching {
                revision: self.revision,
            });
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            self.pending.push_back(match ev.event_type() {
                EventType::Put => PrefixEvent::Put(kv.clone()),
                EventType::Delete => PrefixEvent::Delete(kv.clone()),
            });
        }
    }
}
