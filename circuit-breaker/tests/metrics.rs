//! The metrics a breaker emits, read back through `metrics-util`'s
//! debugging recorder. A binary of its own: the recorder is global.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::advance;
use watertight_circuit_breaker::{BreakerGroup, KeyedCircuitBreakerLayer, State};

use support::*;

/// Every metric of the snapshot as `name{label=value,...}` (labels sorted)
/// to its value. Counters are what was added since the last snapshot.
fn read(s: &Snapshotter) -> HashMap<String, f64> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            };
            (name, value)
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no metric {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

#[tokio::test(start_paused = true)]
async fn breakers_report_state_calls_rejections_transitions_keys_and_refused_trips() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let mut cb = spawn(builder().name("orders").consecutive_failures(2));
    let m = read(&snapshotter);
    assert_eq!(
        get(&m, "watertight_circuit_breaker_state{name=orders}"),
        0.0
    );
    for outcome in [
        "success",
        "failure",
        "slow_success",
        "slow_failure",
        "ignored",
    ] {
        let key =
            format!("watertight_circuit_breaker_calls_total{{name=orders,outcome={outcome}}}");
        assert_eq!(get(&m, &key), 0.0, "registered at construction");
    }
    assert_eq!(
        get(&m, "watertight_circuit_breaker_rejected_total{name=orders}"),
        0.0
    );

    cb.calls(3, Reply::Ok);
    cb.calls(2, Reply::Err);
    let _ = cb.start().rejection();
    let _ = cb.start().rejection();
    let m = read(&snapshotter);
    assert_eq!(
        get(&m, "watertight_circuit_breaker_state{name=orders}"),
        f64::from(State::Open.code())
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_calls_total{name=orders,outcome=success}"
        ),
        3.0
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_calls_total{name=orders,outcome=failure}"
        ),
        2.0
    );
    assert_eq!(
        get(&m, "watertight_circuit_breaker_rejected_total{name=orders}"),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_transitions_total{from=closed,name=orders,to=open}"
        ),
        1.0
    );

    advance(Duration::from_secs(5)).await;
    let probe = cb.start();
    let m = read(&snapshotter);
    assert_eq!(
        get(&m, "watertight_circuit_breaker_state{name=orders}"),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_transitions_total{from=open,name=orders,to=half_open}"
        ),
        1.0
    );
    probe.answer(Reply::Ok).unwrap();
    let m = read(&snapshotter);
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_calls_total{name=orders,outcome=success}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_transitions_total{from=half_open,name=orders,to=closed}"
        ),
        1.0
    );

    // Keyed breakers: one series per key, and the key count.
    let layer: KeyedCircuitBreakerLayer<_, &'static str> = builder()
        .name("tenants")
        .keyed(|req: &&'static str| *req)
        .max_keys(1)
        .build()
        .unwrap();
    let mut keyed = Harness::new(layer);
    let m = read(&snapshotter);
    assert_eq!(
        get(&m, "watertight_circuit_breaker_keys{name=tenants}"),
        0.0
    );
    keyed.call_with("acme", Reply::Ok).unwrap();
    keyed.call_with("globex", Reply::Ok).unwrap_err();
    let m = read(&snapshotter);
    assert_eq!(
        get(&m, "watertight_circuit_breaker_keys{name=tenants}"),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_keys_refused_total{name=tenants}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_calls_total{key=acme,name=tenants,outcome=success}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_state{key=acme,name=tenants}"
        ),
        0.0
    );
    // An idle key makes room for a new one (the default idle timeout is
    // five minutes).
    advance(Duration::from_secs(300)).await;
    keyed.call_with("globex", Reply::Ok).unwrap();
    let m = read(&snapshotter);
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_keys_evicted_total{name=tenants}"
        ),
        1.0
    );
    assert_eq!(
        get(&m, "watertight_circuit_breaker_keys{name=tenants}"),
        1.0
    );

    // A group with room for one open breaker refuses the second trip.
    let layer = builder()
        .name("pool")
        .consecutive_failures(1)
        .group(BreakerGroup::new(0.0).unwrap())
        .build()
        .unwrap();
    let mut members = [Harness::new(layer.clone()), Harness::new(layer)];
    let m = read(&snapshotter);
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_trips_refused_total{name=pool}"
        ),
        0.0,
        "registered at construction"
    );
    for member in &mut members {
        member.calls(1, Reply::Err);
    }
    assert_eq!(
        members.iter().map(Harness::state).collect::<Vec<_>>(),
        [State::Open, State::Closed]
    );
    let m = read(&snapshotter);
    assert_eq!(
        get(
            &m,
            "watertight_circuit_breaker_trips_refused_total{name=pool}"
        ),
        1.0
    );
}
