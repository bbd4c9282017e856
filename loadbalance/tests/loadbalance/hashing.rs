//! Ring hash and Maglev: the same key goes to the same endpoint, and
//! removing one of N endpoints moves about 1/N of the keys.

use std::collections::BTreeMap;

use http::Request;
use watertight_core::Change;
use watertight_loadbalance::{Builder, Pick};

use crate::support::*;

const KEYS: u64 = 10_000;

async fn owners(lb: &mut Lb) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for key in 0..KEYS {
        let mut req = Request::new(());
        req.extensions_mut().insert(key);
        let res = send(lb, req).await.unwrap();
        out.insert(key, res.into_body());
    }
    out
}

async fn consistent(builder: Builder, name: &str) -> usize {
    let cluster = Cluster::default();
    let (tx, rx) = channel();
    tx.unbounded_send(Ok(Change::Reset(endpoints(&[("a", 10)]))))
        .unwrap();
    let mut lb: Lb = builder
        .seed(21)
        .build(rx, cluster.factory())
        .unwrap()
        .with_hash_key(|req: &Req| req.extensions().get::<u64>().copied());
    let before = owners(&mut lb).await;
    assert_eq!(
        owners(&mut lb).await,
        before,
        "{name}: same key, same endpoint"
    );
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in before.values() {
        *load.entry(owner).or_default() += 1;
    }
    assert_eq!(load.len(), 10, "{name}: {load:?}");

    tx.unbounded_send(Ok(Change::Remove("a3".into()))).unwrap();
    let after = owners(&mut lb).await;
    let moved = before.iter().filter(|(k, v)| after[*k] != **v).count();
    let moved_elsewhere = before
        .iter()
        .filter(|(k, v)| v.as_str() != "a3" && after[*k] != **v)
        .count();
    let fraction = moved as f64 / KEYS as f64;
    println!("{name}: removing 1 of 10 moved {fraction:.4} of keys ({moved_elsewhere} not owned by the removed one)");
    assert!((0.05..=0.2).contains(&fraction), "{name}: moved {fraction}");
    assert!(after.values().all(|v| v != "a3"));
    assert!(
        (moved_elsewhere as f64) < 0.02 * KEYS as f64,
        "{name}: {moved_elsewhere} keys of surviving endpoints moved"
    );
    moved_elsewhere
}

#[tokio::test(start_paused = true)]
async fn ring_hash_keeps_keys_and_remaps_about_one_in_n() {
    // On a ring, the keys of the endpoints that stay do not move at all.
    assert_eq!(consistent(Builder::new().ring_hash(), "ring hash").await, 0);
}

#[tokio::test(start_paused = true)]
async fn maglev_keeps_keys_and_remaps_about_one_in_n() {
    consistent(Builder::new().maglev(), "maglev").await;
}

#[tokio::test(start_paused = true)]
async fn hashed_requests_skip_an_ejected_owner_and_keyless_ones_use_p2c() {
    let cluster = Cluster::default();
    let mut lb: Lb = Builder::new()
        .pick(Pick::Maglev(Default::default()))
        .seed(21)
        .build(fixed(endpoints(&[("a", 4)])), cluster.factory())
        .unwrap()
        .with_hash_key(|req: &Req| req.extensions().get::<u64>().copied());
    let mut req = Request::new(());
    req.extensions_mut().insert(7u64);
    let owner = send(&mut lb, req).await.unwrap().into_body();
    lb.handle().eject(owner.as_str());
    let mut req = Request::new(());
    req.extensions_mut().insert(7u64);
    let now = send(&mut lb, req).await.unwrap().into_body();
    assert_ne!(now, owner);
    let t = tally(&mut lb, 3_000).await;
    assert_eq!(t.len(), 3, "{t:?}");
}
