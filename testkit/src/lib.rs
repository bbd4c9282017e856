//! Virtual-time simulation for asserting resilience properties in
//! `cargo test`.
//!
//! - [`SimBackend`]: a `tower::Service` simulating a server: a latency
//!   distribution, a capacity beyond which requests queue, and a [`Script`]
//!   of faults (error bursts, slowdowns, black holes) over virtual time; each
//!   carries an [`Endpoint`](watertight_core::Endpoint).
//! - [`LoadGen`]: open-loop Poisson arrivals following a [`RateProfile`],
//!   recording every request's outcome, latency, attempts and serving zone.
//! - [`Report`]: success rate, latency percentiles, load amplification,
//!   local-zone share, per-endpoint counts and a timeline, as JSON.
//! - [`assert_that`]: assertions for test suites.
//! - [`scenario`]: the seven scenarios of the resilience comparison, run
//!   against any [`Stack`], and [`simulate`](scenario::simulate) for any
//!   other fault schedule.
//! - [`stacks`]: the `none` stack (round robin, no retries) and, with
//!   feature `watertight`, the facade's recommended stack.
//! - [`strategy`] (feature `proptest`): proptest strategies for fault
//!   schedules.
//! - [`etcd`] (feature `etcd`): a real etcd process for tests of
//!   etcd-backed code, killed on drop.
//!
//! Everything runs under `tokio::time::pause`, so a minute of traffic takes
//! a fraction of a second, and the same seed gives the same report, byte for
//! byte.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use watertight_testkit::scenario::{run, Scenario, ScenarioKind, Topology};
//! use watertight_testkit::stacks::Unprotected;
//! use watertight_testkit::assert_that;
//!
//! // A client with no protection loses a third of its requests while zone c
//! // is down.
//! let scenario = Scenario::new(ScenarioKind::ZoneOutage).scaled(0.1);
//! let report = run(&scenario, &Topology::default(), &Unprotected, 7);
//! assert_that(&report).requests_at_least(1_000);
//! assert!(report.success_rate < 0.9);
//! ```
//!
//! # Feature flags
//!
//! - `proptest`: the [`strategy`] module.
//! - `watertight`: `stacks::Watertight`, the recommended client stack of
//!   the `watertight` facade (`watertight::stack`), for the scenarios.
//! - `etcd`: the [`etcd`] module (needs the `etcd` binary to run and
//!   `protoc` to build).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod assert;
pub mod backend;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
pub mod loadgen;
pub mod report;
pub mod scenario;
pub mod stacks;
#[cfg(feature = "proptest")]
#[cfg_attr(docsrs, doc(cfg(feature = "proptest")))]
pub mod strategy;

pub use assert::{assert_that, ReportAssert};
pub use backend::{BackendConfig, Fault, Latency, Phase, Script, SimBackend};
pub use loadgen::{LoadGen, Outcome, RateProfile, Record};
pub use report::Report;
pub use scenario::{ClientContext, Scenario, ScenarioKind, Stack, Topology};
