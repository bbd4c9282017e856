//! Model-based property test of membership: random inserts, removals,
//! resets, health changes, readiness flips and ejections, with requests in
//! between; the balancer must agree with a plain map of what discovery
//! said, never call a service that is not ready, and use unhealthy or
//! ejected endpoints only in panic.

use std::collections::{BTreeMap, BTreeSet};

use http::Request;
use proptest::prelude::*;
use watertight_core::{Change, Endpoint, Health, Locality};
use watertight_loadbalance::Builder;

use crate::support::*;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        id: u8,
        zone: u8,
        health: u8,
        weight: u32,
    },
    Remove {
        id: u8,
    },
    Reset {
        mask: u8,
        seed: u8,
    },
    Ready {
        id: u8,
        ready: bool,
    },
    Eject {
        id: u8,
    },
    Request,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 0u8..3, 0u8..3, prop_oneof![Just(100u32), Just(1), Just(250)])
            .prop_map(|(id, zone, health, weight)| Op::Insert { id, zone, health, weight }),
        2 => (0u8..8).prop_map(|id| Op::Remove { id }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(mask, seed)| Op::Reset { mask, seed }),
        2 => (0u8..8, any::<bool>()).prop_map(|(id, ready)| Op::Ready { id, ready }),
        1 => (0u8..8).prop_map(|id| Op::Eject { id }),
        6 => Just(Op::Request),
    ]
}

const ZONES: [&str; 3] = ["a", "b", "c"];
const HEALTH: [Health; 3] = [Health::Healthy, Health::Degraded, Health::Unhealthy];

fn endpoint(id: u8, zone: u8, health: u8, weight: u32) -> Endpoint {
    let mut e = Endpoint::new(format!("10.0.0.{id}:80").parse().unwrap())
        .with_id(format!("{}{id}", ZONES[zone as usize]))
        .with_locality(Locality::zone(ZONES[zone as usize]))
        .with_weight(weight);
    e.health = HEALTH[health as usize];
    e
}

/// The endpoint ids are `<zone><id>`; the model keys by the numeric id, as
/// the balancer keys by the id string, so an id moving zones is an update.
fn id_of(e: &Endpoint) -> String {
    e.id.to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn membership_matches_what_discovery_said(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let cluster = Cluster::default();
            let (tx, rx) = channel();
            let mut od = watertight_loadbalance::OutlierDetection::default();
            od.max_ejection_percent = 100.0;
            let mut lb: Lb = Builder::new()
                .local_zone("a")
                .outlier_detection(od)
                .seed(7)
                .build(rx, cluster.factory())
                .unwrap();
            // id number -> endpoint, and the ids ejected.
            let mut model: BTreeMap<u8, Endpoint> = BTreeMap::new();
            let mut ejected: BTreeSet<String> = BTreeSet::new();
            let mut not_ready: BTreeSet<String> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert { id, zone, health, weight } => {
                        // An id that moves zones is a new endpoint id: the
                        // old one leaves.
                        if let Some(old) = model.get(&id) {
                            if old.locality.zone != ZONES[zone as usize] {
                                ejected.remove(old.id.as_str());
                                tx.unbounded_send(Ok(Change::Remove(old.id.clone()))).unwrap();
                            }
                        }
                        let e = endpoint(id, zone, health, weight);
                        model.insert(id, e.clone());
                        tx.unbounded_send(Ok(Change::Insert(e))).unwrap();
                    }
                    Op::Remove { id } => {
                        if let Some(e) = model.remove(&id) {
                            ejected.remove(e.id.as_str());
                            tx.unbounded_send(Ok(Change::Remove(e.id))).unwrap();
                        }
                    }
                    Op::Reset { mask, seed } => {
                        let before: BTreeSet<String> = model.values().map(id_of).collect();
                        model.clear();
                        for id in 0..8u8 {
                            if mask & (1 << id) != 0 {
                                let z = (seed.wrapping_add(id)) % 3;
                                let h = (seed / 3 + id) % 3;
                                model.insert(id, endpoint(id, z, h, 100));
                            }
                        }
                        let after: BTreeSet<String> = model.values().map(id_of).collect();
                        ejected.retain(|id| before.contains(id) && after.contains(id));
                        tx.unbounded_send(Ok(Change::Reset(model.values().cloned().collect()))).unwrap();
                    }
                    Op::Ready { id, ready } => {
                        // Readiness belongs to the backend, whatever its zone.
                        for zone in ZONES {
                            let key = format!("{zone}{id}");
                            cluster.get(&key).set_ready(ready);
                            if ready {
                                not_ready.remove(&key);
                            } else {
                                not_ready.insert(key);
                            }
                        }
                    }
                    Op::Eject { id } => {
                        if let Some(e) = model.get(&id) {
                            lb.handle().eject(e.id.clone());
                            ejected.insert(id_of(e));
                        }
                    }
                    Op::Request => {
                        if model.values().all(|e| not_ready.contains(id_of(e).as_str())) {
                            continue;
                        }
                        let res = send(&mut lb, Request::new(())).await.unwrap();
                        let served = res.into_body();
                        prop_assert!(!not_ready.contains(&served), "served {served}, which is not ready");
                        let member = model.values().find(|e| id_of(e) == served);
                        prop_assert!(member.is_some(), "served {served}, model {model:?}");
                        let total = model.len();
                        let available = model
                            .values()
                            .filter(|e| {
                                let id = id_of(e);
                                e.health != Health::Unhealthy && !ejected.contains(&id) && !not_ready.contains(&id)
                            })
                            .count();
                        if 100 * available >= 50 * total {
                            prop_assert!(!ejected.contains(&served), "served {served}, which is ejected");
                            prop_assert_ne!(
                                member.unwrap().health,
                                Health::Unhealthy,
                                "served {} from {:?}; snapshot {:?}",
                                served,
                                model.values().map(|e| (e.id.to_string(), e.health)).collect::<Vec<_>>(),
                                lb.handle().snapshot()
                            );
                        }
                        let snap = lb.handle().snapshot();
                        prop_assert_eq!(snap.endpoints, total);
                        for zone in ZONES {
                            let got = snap.zones.get(zone).copied().unwrap_or_default();
                            let in_zone: Vec<&Endpoint> = model.values().filter(|e| e.locality.zone == zone).collect();
                            prop_assert_eq!(
                                got.healthy + got.degraded + got.unhealthy + got.ejected + got.not_ready,
                                in_zone.len(),
                                "zone {}", zone
                            );
                            if not_ready.is_empty() {
                                let count = |h: Health| in_zone
                                    .iter()
                                    .filter(|e| e.health == h && !ejected.contains(&id_of(e)))
                                    .count();
                                prop_assert_eq!(
                                    (got.healthy, got.degraded, got.unhealthy, got.ejected),
                                    (
                                        count(Health::Healthy),
                                        count(Health::Degraded),
                                        count(Health::Unhealthy),
                                        in_zone.iter().filter(|e| ejected.contains(&id_of(e))).count()
                                    ),
                                    "zone {}", zone
                                );
                            }
                        }
                    }
                }
                if model.values().any(|e| !not_ready.contains(id_of(e).as_str())) {
                    // poll_ready applies what was sent.
                    let served = send(&mut lb, Request::new(())).await.unwrap().into_body();
                    prop_assert!(!not_ready.contains(&served), "served {served}, which is not ready");
                    prop_assert_eq!(lb.len(), model.len());
                }
            }
            Ok(())
        })?;
    }
}
