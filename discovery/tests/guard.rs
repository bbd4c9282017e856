//! The guard in virtual time, over a source the test feeds by hand.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::Stream;
use parking_lot::Mutex;
use proptest::prelude::*;
use support::{ep, ids};
use tokio::time::{advance, Instant};
use watertight_core::{Change, Endpoint, EndpointId};
use watertight_discovery::error::Backend;
use watertight_discovery::guard::Event;
use watertight_discovery::{Error, Guard, GuardHandle, Guarded, SourceExt};

type Tx = mpsc::UnboundedSender<Result<Change, Error>>;
type Source = mpsc::UnboundedReceiver<Result<Change, Error>>;

const MS: Duration = Duration::from_millis(1);
const CONFIRM: Duration = Duration::from_secs(30);
const DEBOUNCE: Duration = Duration::from_millis(100);

fn nine() -> Vec<Endpoint> {
    (1..=9).map(|i| ep(&format!("10.0.0.{i}:80"))).collect()
}

fn backend_error() -> Error {
    Backend::new("test", "registry", "unreachable").into()
}

struct Harness {
    tx: Tx,
    guarded: Guarded<Source>,
    handle: GuardHandle,
    events: Arc<Mutex<Vec<Event>>>,
    /// Items the guard yielded while a send was being delivered.
    buffer: Vec<Result<Change, Error>>,
}

fn harness(builder: watertight_discovery::GuardBuilder) -> Harness {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let guard = builder
        .on_event(move |e| sink.lock().push(e.clone()))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::unbounded();
    let guarded = rx.guarded(&guard);
    let handle = guarded.handle();
    Harness {
        tx,
        guarded,
        handle,
        events,
        buffer: Vec::new(),
    }
}

impl Harness {
    /// Delivers a change to the guard (which starts its batch timer).
    fn send(&mut self, change: Change) {
        self.tx.unbounded_send(Ok(change)).unwrap();
        let items = self.drain();
        self.buffer.extend(items);
    }

    fn fail(&mut self) {
        self.tx.unbounded_send(Err(backend_error())).unwrap();
        let items = self.drain();
        self.buffer.extend(items);
    }

    /// Everything the guard yields without waiting.
    fn drain(&mut self) -> Vec<Result<Change, Error>> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = std::mem::take(&mut self.buffer);
        while let Poll::Ready(Some(item)) = Pin::new(&mut self.guarded).poll_next(&mut cx) {
            out.push(item);
        }
        out
    }

    fn changes(&mut self) -> Vec<Change> {
        self.drain().into_iter().filter_map(Result::ok).collect()
    }

    fn served(&self) -> Vec<String> {
        ids(&self.handle.endpoints())
    }

    fn events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock())
    }
}

fn removals(changes: &[Change]) -> usize {
    changes
        .iter()
        .filter(|c| matches!(c, Change::Remove(_)))
        .count()
}

/// Nine endpoints served, events cleared.
async fn serving_nine(builder: watertight_discovery::GuardBuilder) -> Harness {
    let mut h = harness(builder);
    h.send(Change::Reset(nine()));
    assert!(h.changes().is_empty(), "nothing before the debounce");
    advance(DEBOUNCE).await;
    let c = h.changes();
    assert_eq!(c.len(), 9);
    assert!(c.iter().all(|c| matches!(c, Change::Insert(_))));
    h.events();
    h
}

#[tokio::test(start_paused = true)]
async fn a_drop_of_8_of_9_is_held_until_confirm_after_then_applied_if_it_persists() {
    let mut h = serving_nine(Guard::builder()).await;

    h.send(Change::Reset(vec![ep("10.0.0.1:80")]));
    advance(DEBOUNCE).await;
    assert!(h.changes().is_empty());
    assert_eq!(h.served().len(), 9);
    assert_eq!(h.handle.held_removals(), 8);
    assert_eq!(h.handle.updates_held(), 1);
    assert!(matches!(
        h.events()[..],
        [Event::Held {
            removals: 8,
            endpoints: 9,
            ..
        }]
    ));

    // Held for confirm_after from the batch that asked for the removal.
    advance(CONFIRM - MS).await;
    assert!(
        h.changes().is_empty(),
        "still held just before confirm_after"
    );
    assert_eq!(h.served().len(), 9);

    advance(MS).await;
    let c = h.changes();
    assert_eq!(removals(&c), 8);
    assert_eq!(h.served(), ["10.0.0.1:80"]);
    assert_eq!(h.handle.held_removals(), 0);
    assert_eq!(
        h.events(),
        [Event::Confirmed {
            removed: 8,
            endpoints: 1
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_drop_that_reverts_removes_nothing() {
    let mut h = serving_nine(Guard::builder()).await;

    h.send(Change::Reset(vec![ep("10.0.0.1:80")]));
    advance(DEBOUNCE).await;
    assert!(h.changes().is_empty());

    advance(Duration::from_secs(10)).await;
    h.send(Change::Reset(nine()));
    advance(DEBOUNCE).await;
    assert!(h.changes().is_empty());
    assert_eq!(h.handle.held_removals(), 0);
    assert_eq!(
        h.events()
            .into_iter()
            .filter(|e| !matches!(e, Event::Held { .. }))
            .collect::<Vec<_>>(),
        [Event::Released {
            removed: 0,
            endpoints: 9
        }]
    );

    advance(CONFIRM * 2).await;
    assert!(h.changes().is_empty(), "nothing applies after the revert");
    assert_eq!(h.served().len(), 9);
}

#[tokio::test(start_paused = true)]
async fn a_partial_revert_applies_what_is_still_missing_at_once() {
    let mut h = serving_nine(Guard::builder()).await;
    h.send(Change::Reset(vec![ep("10.0.0.1:80")]));
    advance(DEBOUNCE).await;
    assert!(h.changes().is_empty());

    // Seven of nine come back: two missing is within the ratio.
    h.send(Change::Reset(nine()[..7].to_vec()));
    advance(DEBOUNCE).await;
    let c = h.changes();
    assert_eq!(removals(&c), 2);
    assert_eq!(h.served().len(), 7);
    assert_eq!(h.handle.held_removals(), 0);
}

#[tokio::test(start_paused = true)]
async fn removals_within_the_ratio_and_additions_apply_at_once() {
    let mut h = serving_nine(Guard::builder()).await;
    // Four of nine (44%) go, one arrives.
    let mut next: Vec<_> = nine()[4..].to_vec();
    next.push(ep("10.0.0.10:80"));
    h.send(Change::Reset(next));
    advance(DEBOUNCE).await;
    let c = h.changes();
    assert_eq!(removals(&c), 4);
    assert!(
        matches!(&c[0], Change::Insert(e) if e.id.as_str() == "10.0.0.10:80"),
        "insertions first: {c:?}"
    );
    assert_eq!(h.served().len(), 6);
    assert_eq!(
        h.events(),
        [Event::Applied {
            inserted: 1,
            removed: 4,
            endpoints: 6
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn additions_in_a_held_batch_apply_at_once() {
    let mut h = serving_nine(Guard::builder()).await;
    h.send(Change::Reset(vec![ep("10.0.0.1:80"), ep("10.0.0.10:80")]));
    advance(DEBOUNCE).await;
    let c = h.changes();
    assert_eq!(c.len(), 1);
    assert!(matches!(&c[0], Change::Insert(e) if e.id.as_str() == "10.0.0.10:80"));
    assert_eq!(h.served().len(), 10);
    assert_eq!(h.handle.held_removals(), 8);
}

#[tokio::test(start_paused = true)]
async fn one_by_one_removals_are_judged_per_debounced_batch() {
    // A range delete arrives as nine separate events: one batch, held.
    let mut h = serving_nine(Guard::builder()).await;
    for e in &nine()[1..] {
        h.send(Change::Remove(e.id.clone()));
    }
    advance(DEBOUNCE).await;
    assert!(h.changes().is_empty());
    assert_eq!(h.handle.held_removals(), 8);
}

#[tokio::test(start_paused = true)]
async fn backend_errors_never_remove_endpoints_and_staleness_grows_until_recovery() {
    let mut h = serving_nine(Guard::builder()).await;
    for _ in 0..10 {
        h.fail();
        let items = h.drain();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err(), "errors pass through");
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(h.served().len(), 9);
    assert_eq!(h.handle.backend_errors(), 10);
    // Stale since the last change the source yielded, a debounce before the
    // first error.
    let stale_for = Duration::from_secs(10) + DEBOUNCE;
    assert_eq!(h.handle.staleness(), stale_for);

    // The source recovers with the same set: nothing changes but staleness.
    h.send(Change::Reset(nine()));
    assert!(h.changes().is_empty());
    assert_eq!(h.handle.staleness(), Duration::ZERO);
    let events = h.events();
    assert!(
        events.contains(&Event::Recovered { stale_for }),
        "{events:?}"
    );
    advance(DEBOUNCE).await;
    assert!(h.changes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn changes_are_debounced_into_one_batch() {
    let mut h = serving_nine(Guard::builder()).await;
    let start = Instant::now();
    h.send(Change::Insert(ep("10.0.0.20:80")));
    advance(Duration::from_millis(40)).await;
    h.send(Change::Insert(ep("10.0.0.21:80")));
    h.send(Change::Remove("10.0.0.20:80".into()));
    h.send(Change::Insert(ep("10.0.0.1:80").with_weight(3)));
    assert!(h.changes().is_empty());
    advance(Duration::from_millis(59)).await;
    assert!(
        h.changes().is_empty(),
        "the batch waits {DEBOUNCE:?} from its first change"
    );
    advance(MS).await;
    let c = h.changes();
    assert_eq!(start.elapsed(), DEBOUNCE);
    let got: BTreeSet<_> = c
        .iter()
        .map(|c| match c {
            Change::Insert(e) => format!("+{}/{}", e.id, e.weight),
            Change::Remove(id) => format!("-{id}"),
            Change::Reset(_) => unreachable!("the guard never yields a reset"),
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from(["+10.0.0.1:80/3".to_owned(), "+10.0.0.21:80/100".to_owned()])
    );
    assert_eq!(h.handle.updates_applied(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_stream_ends_after_the_source_once_nothing_is_pending() {
    let mut h = harness(Guard::builder());
    h.send(Change::Reset(nine()));
    h.tx.close_channel();
    // An ended source flushes its last batch at once.
    let items = h.drain();
    assert_eq!(items.len(), 9);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(matches!(
        Pin::new(&mut h.guarded).poll_next(&mut cx),
        Poll::Ready(None)
    ));
}

#[tokio::test(start_paused = true)]
async fn metrics_report_endpoints_updates_holds_errors_and_staleness() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (tx, rx) = mpsc::unbounded();
    let guard = Guard::builder().name("api").build().unwrap();
    let mut guarded = metrics::with_local_recorder(&recorder, || rx.guarded(&guard));
    let read = || -> BTreeMap<String, f64> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| {
                let key = k.key();
                assert!(
                    key.labels()
                        .any(|l| l.key() == "name" && l.value() == "api"),
                    "{key:?}"
                );
                let v = match v {
                    DebugValue::Counter(c) => c as f64,
                    DebugValue::Gauge(g) => g.into_inner(),
                    DebugValue::Histogram(_) => unreachable!(),
                };
                (key.name().to_owned(), v)
            })
            .collect()
    };
    let m = read();
    assert_eq!(
        m["watertight_discovery_endpoints"], 0.0,
        "gauges exist from construction"
    );
    assert_eq!(m["watertight_discovery_staleness_seconds"], 0.0);

    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut drain = |g: &mut Guarded<Source>| {
        while let Poll::Ready(Some(_)) = Pin::new(&mut *g).poll_next(&mut cx) {}
    };
    tx.unbounded_send(Ok(Change::Reset(nine()))).unwrap();
    drain(&mut guarded);
    advance(DEBOUNCE).await;
    drain(&mut guarded);
    tx.unbounded_send(Ok(Change::Reset(vec![]))).unwrap();
    drain(&mut guarded);
    advance(DEBOUNCE).await;
    drain(&mut guarded);
    advance(Duration::from_secs(2)).await;
    tx.unbounded_send(Err(backend_error())).unwrap();
    drain(&mut guarded);

    let m = read();
    assert_eq!(m["watertight_discovery_endpoints"], 9.0);
    assert_eq!(m["watertight_discovery_updates_applied_total"], 1.0);
    assert_eq!(m["watertight_discovery_updates_held_total"], 1.0);
    assert_eq!(m["watertight_discovery_backend_errors_total"], 1.0);
    assert_eq!(m["watertight_discovery_staleness_seconds"], 2.1);
}

#[test]
fn invalid_configuration_names_the_field() {
    let e = Guard::builder().max_removal_ratio(1.5).build().unwrap_err();
    assert_eq!(e.field(), "max_removal_ratio");
    let e = Guard::builder().name("").build().unwrap_err();
    assert_eq!(e.field(), "name");
    let g = Guard::builder().build().unwrap();
    assert_eq!(g.max_removal_ratio(), 0.5);
    assert_eq!(g.confirm_after(), CONFIRM);
    assert_eq!(g.debounce(), DEBOUNCE);
}

#[cfg(feature = "serde")]
#[test]
fn the_configuration_reads_from_toml() {
    let g: Guard = toml::from_str(
        "max_removal_ratio = 0.3\nconfirm_after = \"1m\"\ndebounce = \"50ms\"\nname = \"api\"",
    )
    .unwrap();
    assert_eq!(g.max_removal_ratio(), 0.3);
    assert_eq!(g.confirm_after(), Duration::from_secs(60));
    assert_eq!(g.debounce(), Duration::from_millis(50));
    assert_eq!(g.name(), "api");
    let e = toml::from_str::<Guard>("max_removal_ratio = 2.0").unwrap_err();
    assert!(e.to_string().contains("max_removal_ratio"), "{e}");
    let e = toml::from_str::<Guard>("confirm = \"1m\"").unwrap_err();
    assert!(e.to_string().contains("confirm"), "{e}");
}

// Model-based: random histories of source updates, errors and time, checked
// against what the guard promises.

#[derive(Clone, Debug)]
enum Op {
    /// The source announces this subset of nine endpoints.
    Set(u16),
    /// The source fails.
    Fail,
    /// Time passes.
    Wait(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u16..512).prop_map(Op::Set),
            1 => Just(Op::Fail),
            3 => (0u64..40_000).prop_map(Op::Wait),
        ],
        1..40,
    )
}

fn subset(mask: u16) -> Vec<Endpoint> {
    nine()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, e)| e)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_guard_keeps_its_promises(ops in ops(), ratio in prop_oneof![Just(0.0), Just(0.5), Just(1.0)]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut h = harness(Guard::builder().max_removal_ratio(ratio));
            // What the source says, and since when each endpoint has been
            // missing from it.
            let mut upstream: BTreeSet<EndpointId> = BTreeSet::new();
            let mut missing_since: BTreeMap<EndpointId, Instant> = BTreeMap::new();
            let mut served: BTreeSet<EndpointId> = BTreeSet::new();
            let all: Vec<EndpointId> = nine().into_iter().map(|e| e.id).collect();
            for id in &all {
                missing_since.insert(id.clone(), Instant::now());
            }
            for op in ops.iter().chain([Op::Wait(31_000), Op::Wait(31_000)].iter()) {
                match op {
                    Op::Set(mask) => {
                        let list = subset(*mask);
                        upstream = list.iter().map(|e| e.id.clone()).collect();
                        for id in &all {
                            if upstream.contains(id) {
                                missing_since.remove(id);
                            } else {
                                missing_since.entry(id.clone()).or_insert_with(Instant::now);
                            }
                        }
                        h.send(Change::Reset(list));
                    }
                    Op::Fail => h.fail(),
                    Op::Wait(ms) => advance(Duration::from_millis(*ms)).await,
                }
                let before = served.len();
                let mut removed = Vec::new();
                for item in h.drain() {
                    match item {
                        Err(_) => assert!(matches!(op, Op::Fail)),
                        Ok(Change::Insert(e)) => {
                            assert!(upstream.contains(&e.id), "inserted what the source lacks");
                            served.insert(e.id);
                        }
                        Ok(Change::Remove(id)) => {
                            assert!(!upstream.contains(&id), "removed what the source has");
                            assert!(served.remove(&id));
                            removed.push(id);
                        }
                        Ok(Change::Reset(_)) => panic!("the guard never yields a reset"),
                    }
                }
                // Removals of endpoints missing for less than confirm_after
                // never exceed the ratio of what is served besides the
                // confirmed ones.
                let old = removed
                    .iter()
                    .filter(|id| missing_since[*id].elapsed() >= CONFIRM)
                    .count();
                let young = removed.len() - old;
                assert!(
                    young == 0 || young as f64 <= ratio * (before - old) as f64,
                    "{young} young and {old} confirmed removals of {before}"
                );
                assert_eq!(
                    ids(&h.handle.endpoints()),
                    served.iter().map(|i| i.to_string()).collect::<Vec<_>>()
                );
            }
            // Once quiet for longer than debounce + confirm_after, the guard
            // serves exactly what the source says.
            assert_eq!(served, upstream);
        });
    }
}
