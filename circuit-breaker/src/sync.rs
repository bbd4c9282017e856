//! The atomics the breaker's lock-free parts use: `std`'s, or loom's when the
//! crate is built with `--cfg watertight_loom` for the model checker.

#[cfg(watertight_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
#[cfg(not(watertight_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;
