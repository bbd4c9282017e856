//! proptest strategies for fault schedules (feature `proptest`).
//!
//! ```
//! use proptest::prelude::*;
//! use std::time::Duration;
//! use watertight_testkit::strategy::script;
//!
//! proptest!(|(s in script(Duration::from_secs(60), 4))| {
//!     prop_assert!(s.phases().len() <= 4);
//!     for p in s.phases() {
//!         prop_assert!(p.from < p.until && p.until <= Duration::from_secs(60));
//!     }
//! });
//! ```

use std::time::Duration;

use proptest::prelude::*;

use crate::backend::{Fault, Phase, Script};

/// Any fault: error bursts (rate 0–100%, status 500/502/503/504), slowdowns
/// (1×–50×) and black holes.
pub fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (
            0.0f64..=1.0,
            prop_oneof![Just(500u16), Just(502), Just(503), Just(504)]
        )
            .prop_map(|(rate, status)| Fault::Errors { rate, status }),
        (1.0f64..50.0).prop_map(|factor| Fault::Slow { factor }),
        Just(Fault::Hang),
    ]
}

/// A fault over a stretch of at least a millisecond inside `horizon`.
pub fn phase(horizon: Duration) -> impl Strategy<Value = Phase> {
    let ms = horizon.as_millis().max(2) as u64;
    (0..ms - 1, 1..ms, fault()).prop_map(move |(from, len, fault)| {
        let from = Duration::from_millis(from);
        let until = (from + Duration::from_millis(len)).min(Duration::from_millis(ms));
        Phase::new(from, until, fault)
    })
}

/// A script of up to `max_phases` faults inside `horizon`.
pub fn script(horizon: Duration, max_phases: usize) -> impl Strategy<Value = Script> {
    proptest::collection::vec(phase(horizon), 0..=max_phases)
        .prop_map(|phases| phases.into_iter().fold(Script::healthy(), Script::with))
}
