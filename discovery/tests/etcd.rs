//! The etcd source and registration against a real etcd process the test
//! starts on free loopback ports (`watertight_testkit::etcd::EtcdServer`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{ep, next, next_change, reset_ids, until, WAIT};
use tokio::time::Instant;
use watertight_core::{Backoff, Change, Endpoint};
use watertight_discovery::error::InvalidEntry;
use watertight_discovery::etcd::etcd_client::{self, Client, CompactionOptions, KeyValue};
use watertight_discovery::etcd::{default_connect_options, PrefixEvent, PrefixWatch};
use watertight_discovery::{Error, Etcd, Registration, RegistrationBuilder};
use watertight_testkit::etcd::EtcdServer;

const PREFIX: &str = "/services/api/";

async fn put(client: &mut Client, e: &Endpoint) {
    let value = serde_json::to_string(e).unwrap();
    client
        .put(format!("{PREFIX}{}", e.id), value, None)
        .await
        .unwrap();
}

async fn delete(client: &mut Client, e: &Endpoint) {
    client
        .delete(format!("{PREFIX}{}", e.id), None)
        .await
        .unwrap();
}

fn source(etcd: &EtcdServer) -> Etcd {
    Etcd::builder([etcd.endpoint()], PREFIX)
        .reconnect_backoff(
            Backoff::equal_jitter(Duration::from_millis(50), Duration::from_millis(500)).unwrap(),
        )
        .seed(1)
        .build()
        .unwrap()
}

/// The set a sequence of items describes, starting from `set`.
fn fold(set: &mut BTreeMap<String, Endpoint>, items: &[Result<Change, Error>]) {
    for item in items {
        match item {
            Ok(Change::Insert(e)) => {
                set.insert(e.id.to_string(), e.clone());
            }
            Ok(Change::Remove(id)) => {
                set.remove(id.as_str());
            }
            Ok(Change::Reset(list)) => {
                *set = list.iter().map(|e| (e.id.to_string(), e.clone())).collect();
            }
            Err(_) => {}
        }
    }
}

fn keys(set: &BTreeMap<String, Endpoint>) -> Vec<&str> {
    set.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn the_initial_set_then_puts_and_deletes_arrive_as_changes() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let (a, b, c) = (ep("10.0.0.1:80"), ep("10.0.0.2:80"), ep("10.0.0.3:80"));
    put(&mut client, &a).await;
    put(&mut client, &b.clone().with_label("version", "v1")).await;
    // Outside the prefix: not ours.
    client.put("/services/other/x", "{}", None).await.unwrap();

    let mut source = source(&etcd);
    let change = next(&mut source).await.unwrap();
    assert_eq!(reset_ids(&change), ["10.0.0.1:80", "10.0.0.2:80"]);

    put(&mut client, &c).await;
    assert_eq!(next(&mut source).await.unwrap(), Change::Insert(c.clone()));
    let b5 = b.clone().with_weight(5);
    put(&mut client, &b5).await;
    assert_eq!(next(&mut source).await.unwrap(), Change::Insert(b5));
    delete(&mut client, &a).await;
    assert_eq!(
        next(&mut source).await.unwrap(),
        Change::Remove(a.id.clone())
    );
}

#[tokio::test]
async fn malformed_endpoint_json_is_skipped_with_an_error_naming_the_key() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let a = ep("10.0.0.1:80");
    put(&mut client, &a).await;
    client
        .put(format!("{PREFIX}broken"), "{not json", None)
        .await
        .unwrap();

    let mut source = source(&etcd);
    let seen = until(&mut source, |s| {
        s.iter().any(|i| matches!(i, Ok(Change::Reset(_))))
    })
    .await;
    let invalid: Vec<&InvalidEntry> = seen
        .iter()
        .filter_map(|i| i.as_ref().err().and_then(Error::as_invalid_entry))
        .collect();
    assert_eq!(invalid.len(), 1, "{seen:?}");
    assert_eq!(invalid[0].key(), "/services/api/broken");
    let mut set = BTreeMap::new();
    fold(&mut set, &seen);
    assert_eq!(keys(&set), ["10.0.0.1:80"]);

    // A bad value in the watch: an error naming key and field; the stream
    // goes on.
    client
        .put(
            format!("{PREFIX}zero"),
            r#"{"addr":"10.0.0.9:80","weight":0}"#,
            None,
        )
        .await
        .unwrap();
    let e = next(&mut source).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("/services/api/zero") && text.contains("weight"),
        "{text}"
    );
    // A key that held a good endpoint keeps it when overwritten with garbage.
    client
        .put(format!("{PREFIX}{}", a.id), "[]", None)
        .await
        .unwrap();
    let e = next(&mut source).await.unwrap_err();
    assert_eq!(
        e.as_invalid_entry().unwrap().key(),
        "/services/api/10.0.0.1:80"
    );
    let c = ep("10.0.0.3:80");
    put(&mut client, &c).await;
    assert_eq!(next(&mut source).await.unwrap(), Change::Insert(c));
}

#[tokio::test]
async fn an_id_held_by_two_keys_goes_only_with_the_last_of_them() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let mut source = source(&etcd);
    assert_eq!(next(&mut source).await.unwrap(), Change::Reset(vec![]));
    let a = ep("10.0.0.1:80");
    let a5 = a.clone().with_weight(5);
    let (k1, k2) = (format!("{PREFIX}one"), format!("{PREFIX}two"));
    let json = |e: &Endpoint| serde_json::to_string(e).unwrap();
    client.put(k1.as_str(), json(&a), None).await.unwrap();
    assert_eq!(next(&mut source).await.unwrap(), Change::Insert(a.clone()));
    client.put(k2.as_str(), json(&a5), None).await.unwrap();
    assert_eq!(next(&mut source).await.unwrap(), Change::Insert(a5));

    // The other key still holds the id: it is the endpoint again.
    client.delete(k2.as_str(), None).await.unwrap();
    assert_eq!(next(&mut source).await.unwrap(), Change::Insert(a.clone()));
    client.delete(k1.as_str(), None).await.unwrap();
    assert_eq!(next(&mut source).await.unwrap(), Change::Remove(a.id));
}

#[tokio::test]
async fn killing_etcd_keeps_the_set_and_the_watch_resumes_after_restart() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let (a, b, c) = (ep("10.0.0.1:80"), ep("10.0.0.2:80"), ep("10.0.0.3:80"));
    put(&mut client, &a).await;
    put(&mut client, &b).await;
    let mut source = source(&etcd);
    let mut set = BTreeMap::new();
    fold(&mut set, &[next(&mut source).await]);
    assert_eq!(keys(&set), ["10.0.0.1:80", "10.0.0.2:80"]);

    etcd.kill();
    // Errors, and nothing but errors: no endpoint removed.
    let outage = until(&mut source, |s| {
        s.iter().filter(|i| i.is_err()).count() >= 3
    })
    .await;
    assert!(outage.iter().all(|i| i.is_err()), "{outage:?}");
    let e = outage[0].as_ref().unwrap_err();
    assert_eq!(
        e.as_backend().expect("a backend error").source_kind(),
        "etcd"
    );

    // While the source is cut off (it is not polled), the registry changes.
    etcd.restart().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    put(&mut client, &c).await;
    delete(&mut client, &a).await;

    // The watch resumes from the last revision it saw: both changes arrive
    // as the events they were, after the re-announced set.
    let seen = until(&mut source, |s| {
        s.iter()
            .any(|i| matches!(i, Ok(Change::Remove(id)) if *id == a.id))
    })
    .await;
    let changes: Vec<&Change> = seen.iter().filter_map(|i| i.as_ref().ok()).collect();
    assert!(
        changes.contains(&&Change::Insert(c.clone())),
        "the insert made while cut off arrives as an event: {changes:?}"
    );
    fold(&mut set, &seen);
    assert_eq!(keys(&set), ["10.0.0.2:80", "10.0.0.3:80"]);
    assert!(
        !changes.iter().any(
            |c| matches!(c, Change::Reset(l) if l.iter().any(|e| e.id.as_str() == "10.0.0.3:80"))
        ),
        "resumed, not re-read: {changes:?}"
    );
}

#[tokio::test]
async fn compaction_forces_a_resync_that_ends_in_the_right_set() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let (a, b, c, d) = (
        ep("10.0.0.1:80"),
        ep("10.0.0.2:80"),
        ep("10.0.0.3:80"),
        ep("10.0.0.4:80"),
    );
    put(&mut client, &a).await;
    put(&mut client, &b).await;
    let mut source = source(&etcd);
    let mut set = BTreeMap::new();
    fold(&mut set, &[next(&mut source).await]);

    etcd.kill();
    until(&mut source, |s| s.iter().any(|i| i.is_err())).await;

    // Changes the source misses, then history compacted past them.
    etcd.restart().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    put(&mut client, &c).await;
    delete(&mut client, &a).await;
    put(&mut client, &d).await;
    delete(&mut client, &d).await;
    let revision = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    let seen = until(&mut source, |s| {
        s.iter()
            .any(|i| matches!(i, Ok(Change::Reset(l)) if l.iter().any(|e| e.id == c.id)))
    })
    .await;
    fold(&mut set, &seen);
    assert_eq!(keys(&set), ["10.0.0.2:80", "10.0.0.3:80"]);

    // And the new watch carries on.
    put(&mut client, &d).await;
    assert_eq!(next_change(&mut source).await, Change::Insert(d));
}

/// The next event of a prefix watch, failing the test if none comes within
/// [`WAIT`].
async fn next_event(watch: &mut PrefixWatch) -> PrefixEvent {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("no watch event in time")
}

fn key_of(kv: &KeyValue) -> &str {
    kv.key_str().unwrap()
}

#[tokio::test]
async fn a_prefix_watch_reads_follows_and_reads_again_when_asked() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    client.put("/config/a", "1", None).await.unwrap();
    client.put("/other/x", "1", None).await.unwrap();
    let mut watch = PrefixWatch::new(
        [etcd.endpoint()],
        "/config/",
        default_connect_options(),
        Backoff::constant(Duration::from_millis(50))
            .unwrap()
            .sequence(),
    );
    assert_eq!(watch.revision(), 0);

    let PrefixEvent::Snapshot { revision, kvs } = next_event(&mut watch).await else {
        panic!("a snapshot comes first");
    };
    assert_eq!(kvs.iter().map(key_of).collect::<Vec<_>>(), ["/config/a"]);
    assert_eq!(watch.revision(), revision);
    assert!(
        matches!(next_event(&mut watch).await, PrefixEvent::Watching { revision: r } if r == revision)
    );

    client.put("/config/b", "2", None).await.unwrap();
    let PrefixEvent::Put(kv) = next_event(&mut watch).await else {
        panic!("expected a put");
    };
    assert_eq!((key_of(&kv), kv.value()), ("/config/b", &b"2"[..]));
    assert_eq!(watch.revision(), kv.mod_revision());
    client.delete("/config/a", None).await.unwrap();
    let PrefixEvent::Delete(kv) = next_event(&mut watch).await else {
        panic!("expected a delete");
    };
    assert_eq!(key_of(&kv), "/config/a");
    let deleted_at = kv.mod_revision();
    assert!(deleted_at > revision);

    // A consumer that could not act on an event (a lookup through the
    // watch's client failed) asks for a fresh read.
    assert!(watch.client().is_some());
    watch.resync(etcd_client::Error::WatchError("lookup failed".to_owned()));
    let PrefixEvent::Disconnected { error, retry_in } = next_event(&mut watch).await else {
        panic!("the failure is reported first");
    };
    assert!(error.to_string().contains("lookup failed"), "{error}");
    assert_eq!(retry_in, Duration::from_millis(50));
    assert!(watch.client().is_none());
    let PrefixEvent::Snapshot { revision, kvs } = next_event(&mut watch).await else {
        panic!("the prefix is read again");
    };
    assert_eq!(kvs.iter().map(key_of).collect::<Vec<_>>(), ["/config/b"]);
    assert!(revision >= deleted_at);
}

/// Set in the child process of
/// `registrations_appear_and_a_killed_process_is_removed_within_ttl_plus_1s`:
/// the etcd endpoint the child registers with.
const CHILD_ENDPOINT: &str = "WATERTIGHT_DISCOVERY_TEST_CHILD_ETCD";

/// The lease TTL of the registration tests.
const TTL: Duration = Duration::from_secs(2);

/// A child process, killed with SIGKILL when dropped (so a failing test
/// leaves none behind).
struct ChildProcess(std::process::Child);

impl ChildProcess {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A registration of `me` under [`PREFIX`] with the lease TTL [`TTL`].
fn registration(etcd: &EtcdServer, me: &Endpoint) -> RegistrationBuilder {
    Registration::builder([etcd.endpoint()], PREFIX, me.clone()).ttl(TTL)
}

/// Registers with `builder` and waits until `source` inserts `me`.
async fn register_seen(
    builder: RegistrationBuilder,
    source: &mut Etcd,
    me: &Endpoint,
) -> Registration {
    let r = builder.register().await.unwrap();
    assert_eq!(next(source).await.unwrap(), Change::Insert(me.clone()));
    r
}

/// The next item, failing the test unless it comes within [`TTL`] + 1 s:
/// how soon an expired lease must show.
async fn within_ttl_plus_1s(source: &mut Etcd) -> Result<Change, Error> {
    tokio::time::timeout(TTL + Duration::from_secs(1), next(source))
        .await
        .unwrap_or_else(|_| panic!("not removed within the {TTL:?} TTL + 1 s"))
}

/// Waits until `r` holds another lease than `old`, failing the test after
/// [`WAIT`].
async fn new_lease(r: &Registration, old: i64) {
    let deadline = Instant::now() + WAIT;
    while r.lease_id() == old {
        assert!(Instant::now() < deadline, "still on lease {old}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registrations_appear_and_a_killed_process_is_removed_within_ttl_plus_1s() {
    let one = ep("10.0.1.1:80").with_label("instance", "one");
    if let Ok(endpoint) = std::env::var(CHILD_ENDPOINT) {
        // The child: register, keep the lease alive, and wait to be killed.
        let r = Registration::builder([endpoint], PREFIX, one.clone())
            .ttl(TTL)
            .register()
            .await
            .unwrap();
        assert!(r.is_registered());
        std::future::pending::<()>().await;
    }

    let etcd = EtcdServer::start().await.unwrap();
    let mut source = source(&etcd);
    let mut set = BTreeMap::new();
    fold(&mut set, &[next(&mut source).await]);
    assert!(set.is_empty());

    // Instance one is another process: this test binary again, running only
    // this test in child mode.
    let mut child = ChildProcess(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "registrations_appear_and_a_killed_process_is_removed_within_ttl_plus_1s",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENDPOINT, etcd.endpoint())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let two = ep("10.0.1.2:80").with_label("instance", "two");
    let r2 = registration(&etcd, &two).register().await.unwrap();
    assert_eq!(r2.key(), "/services/api/10.0.1.2:80");
    let seen = until(&mut source, |s| s.len() >= 2).await;
    let mut inserted: Vec<Change> = seen.into_iter().map(Result::unwrap).collect();
    inserted.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        inserted,
        [Change::Insert(one.clone()), Change::Insert(two.clone())]
    );
    assert!(r2.is_registered());

    // Instance one dies without a chance to deregister: SIGKILL. Its
    // keep-alives stop and etcd expires its lease.
    let died = Instant::now();
    child.kill();
    let removed = within_ttl_plus_1s(&mut source).await;
    let detected = died.elapsed();
    assert_eq!(removed.unwrap(), Change::Remove(one.id.clone()));
    eprintln!("lease expiry removed the killed instance {detected:?} after it died (TTL {TTL:?})");

    // The live one outlives its TTL on keep-alives, then leaves at once on
    // graceful shutdown.
    assert!(
        tokio::time::timeout(TTL * 2, next(&mut source))
            .await
            .is_err(),
        "nothing else changes while the second instance keeps its lease alive"
    );
    assert!(r2.is_registered());
    r2.deregister().await.unwrap();
    assert_eq!(
        next(&mut source).await.unwrap(),
        Change::Remove(two.id.clone())
    );
}

#[tokio::test]
async fn dropping_a_registration_leaves_its_key_to_expire_with_the_lease() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut source = source(&etcd);
    next(&mut source).await.unwrap();
    let me = ep("10.0.1.3:80");
    let r = register_seen(registration(&etcd, &me), &mut source, &me).await;

    // Dropped, not deregistered: the key is still there at first (no
    // revoke), and gone once the lease expires.
    drop(r);
    let mut client = etcd.client().await.unwrap();
    let key = format!("{PREFIX}{}", me.id);
    assert_eq!(client.get(key.as_str(), None).await.unwrap().kvs().len(), 1);
    let removed = within_ttl_plus_1s(&mut source).await;
    assert_eq!(removed.unwrap(), Change::Remove(me.id.clone()));
    assert!(client
        .get(key.as_str(), None)
        .await
        .unwrap()
        .kvs()
        .is_empty());
}

#[tokio::test]
async fn a_lost_lease_is_registered_again() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut source = source(&etcd);
    next(&mut source).await.unwrap();
    let me = ep("10.0.2.1:80");
    let r = register_seen(registration(&etcd, &me), &mut source, &me).await;
    let first = r.lease_id();

    // Someone revokes the lease: the key goes, the keep-alive notices and
    // registers again under a new lease.
    let mut client = etcd.client().await.unwrap();
    client.lease_revoke(first).await.unwrap();
    assert_eq!(
        next(&mut source).await.unwrap(),
        Change::Remove(me.id.clone())
    );
    assert_eq!(next(&mut source).await.unwrap(), Change::Insert(me.clone()));
    new_lease(&r, first).await;
}

#[tokio::test]
async fn a_registration_cut_off_past_its_ttl_registers_again() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let mut source = source(&etcd);
    next(&mut source).await.unwrap();
    let me = ep("10.0.3.1:80");
    // The keep-alive task waits longer after a failure than the lease lives.
    let builder =
        registration(&etcd, &me).retry_backoff(Backoff::constant(Duration::from_secs(6)).unwrap());
    let r = register_seen(builder, &mut source, &me).await;
    let first = r.lease_id();

    etcd.restart().await.unwrap();
    // The lease expires while the task waits; when it is back, etcd has
    // forgotten the lease, and it registers again.
    let seen = until(&mut source, |s| {
        s.iter()
            .skip_while(|i| !matches!(i, Ok(Change::Remove(id)) if *id == me.id))
            .any(|i| matches!(i, Ok(Change::Insert(e)) if *e == me))
    })
    .await;
    assert!(
        seen.iter().any(|i| i.is_err()),
        "the outage is reported: {seen:?}"
    );
    // The task records the new lease right after etcd confirms the put.
    new_lease(&r, first).await;
    assert!(r.is_registered());
}

#[tokio::test]
async fn registration_errors_name_the_field_or_the_key() {
    use watertight_discovery::error::ConfigError;
    // Nothing listens on port 1: a connection attempt would be a backend
    // error, not a configuration error.
    let field = |r: Result<Registration, watertight_core::BoxError>| {
        let e = r.unwrap_err();
        e.downcast_ref::<ConfigError>()
            .unwrap_or_else(|| panic!("not a configuration error: {e}"))
            .field()
            .to_owned()
    };
    let me = ep("10.0.4.1:80");
    let r = Registration::builder(Vec::<String>::new(), PREFIX, me.clone())
        .register()
        .await;
    assert_eq!(field(r), "endpoints");
    let r = Registration::builder(["http://127.0.0.1:1"], "", me.clone())
        .register()
        .await;
    assert_eq!(field(r), "prefix");
    let r = Registration::builder(["http://127.0.0.1:1"], PREFIX, me.clone())
        .ttl(Duration::ZERO)
        .register()
        .await;
    assert_eq!(field(r), "ttl");

    // A valid configuration against no etcd: a backend error naming the key.
    let e = Registration::builder(["http://127.0.0.1:1"], PREFIX, me)
        .register()
        .await
        .unwrap_err();
    let backend = e
        .downcast_ref::<watertight_discovery::error::Backend>()
        .unwrap_or_else(|| panic!("not a backend error: {e}"));
    assert_eq!(backend.target(), "/services/api/10.0.4.1:80");
}

#[test]
fn invalid_configuration_names_the_field() {
    let e = Etcd::builder(Vec::<String>::new(), PREFIX)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "endpoints");
    let e = Etcd::builder(["http://127.0.0.1:1"], "")
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "prefix");
}
