//! The tower `Discover` adapter, and tower's own balancer over a source.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use support::ep;
use tower::balance::p2c::Balance;
use tower::discover::Change as TowerChange;
use tower::load::Constant;
use tower::{Service, ServiceExt};
use watertight_core::{Change, Endpoint, EndpointId};
use watertight_discovery::error::Backend;
use watertight_discovery::{Error, Guard, ServiceDiscover, SourceExt, Static};

type Tx = mpsc::UnboundedSender<Result<Change, Error>>;
type Adapter =
    ServiceDiscover<mpsc::UnboundedReceiver<Result<Change, Error>>, fn(&Endpoint) -> u32>;

/// What the adapter yielded, as `+id/weight` and `-id`; the service is the
/// weight it was built with.
fn drain<St>(d: &mut ServiceDiscover<St, fn(&Endpoint) -> u32>) -> Vec<Result<String, String>>
where
    St: Stream<Item = Result<Change, Error>> + Unpin,
{
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    while let Poll::Ready(Some(item)) = Pin::new(&mut *d).poll_next(&mut cx) {
        out.push(match item {
            Ok(TowerChange::Insert(id, weight)) => Ok(format!("+{id}/{weight}")),
            Ok(TowerChange::Remove(id)) => Ok(format!("-{id}")),
            Err(e) => Err(e.to_string()),
        });
    }
    out
}

fn weight_of(e: &Endpoint) -> u32 {
    e.weight
}

fn adapter() -> (Tx, Adapter) {
    let (tx, rx) = mpsc::unbounded();
    (
        tx,
        ServiceDiscover::new(rx, weight_of as fn(&Endpoint) -> u32),
    )
}

#[test]
fn resets_become_inserts_and_removes_keyed_by_endpoint_id() {
    let (tx, mut d) = adapter();
    let send = |c| tx.unbounded_send(Ok(c)).unwrap();
    send(Change::Reset(vec![ep("10.0.0.1:80"), ep("10.0.0.2:80")]));
    assert_eq!(
        drain(&mut d),
        [Ok("+10.0.0.1:80/100".into()), Ok("+10.0.0.2:80/100".into())]
    );

    // A changed endpoint is inserted again under its key (a replacement for
    // tower), a new one inserted, a missing one removed.
    send(Change::Reset(vec![
        ep("10.0.0.2:80").with_weight(5),
        ep("10.0.0.3:80"),
    ]));
    let got: BTreeSet<_> = drain(&mut d).into_iter().map(Result::unwrap).collect();
    assert_eq!(
        got,
        BTreeSet::from([
            "+10.0.0.2:80/5".to_owned(),
            "+10.0.0.3:80/100".to_owned(),
            "-10.0.0.1:80".to_owned()
        ])
    );

    // Nothing new, nothing said.
    send(Change::Insert(ep("10.0.0.3:80")));
    send(Change::Remove(EndpointId::from("10.0.0.9:80")));
    assert!(drain(&mut d).is_empty());
    send(Change::Remove(EndpointId::from("10.0.0.3:80")));
    assert_eq!(drain(&mut d), [Ok("-10.0.0.3:80".into())]);
    let ids: Vec<_> = d.endpoints().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, ["10.0.0.2:80"]);
}

#[test]
fn errors_are_dropped_unless_forwarded() {
    let error = || Error::from(Backend::new("test", "registry", "unreachable"));
    let (tx, d) = adapter();
    let mut d = d;
    tx.unbounded_send(Err(error())).unwrap();
    tx.unbounded_send(Ok(Change::Insert(ep("10.0.0.1:80"))))
        .unwrap();
    assert_eq!(drain(&mut d), [Ok("+10.0.0.1:80/100".into())]);

    let (tx, d) = adapter();
    let mut d = d.forward_errors(true);
    tx.unbounded_send(Err(error())).unwrap();
    assert_eq!(
        drain(&mut d),
        [Err("test source registry failed: unreachable".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn tower_p2c_balances_over_a_guarded_source() {
    let endpoints: Vec<_> = (1..=3).map(|i| ep(&format!("10.0.0.{i}:80"))).collect();
    let guard = Guard::builder().build().unwrap();
    let discover = Static::new(endpoints)
        .guarded(&guard)
        .into_discover(|e: &Endpoint| {
            let addr = e.addr.to_string();
            Constant::new(
                tower::service_fn(move |_: ()| {
                    let addr = addr.clone();
                    async move { Ok::<_, Infallible>(addr) }
                }),
                0,
            )
        });
    let mut balance = Balance::new(discover);
    let mut served = BTreeSet::new();
    for _ in 0..200 {
        let addr = tokio::time::timeout(
            Duration::from_secs(5),
            balance.ready().await.unwrap().call(()),
        )
        .await
        .unwrap()
        .unwrap();
        served.insert(addr);
    }
    assert_eq!(
        served,
        BTreeSet::from(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(String::from))
    );
}

#[tokio::test(start_paused = true)]
async fn static_yields_its_list_once_and_never_ends() {
    let mut s = Static::new([ep("10.0.0.1:80")]);
    assert_eq!(
        s.next().await.unwrap().unwrap(),
        Change::Reset(vec![ep("10.0.0.1:80")])
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), s.next())
            .await
            .is_err(),
        "a static set stays pending rather than ending"
    );
}
