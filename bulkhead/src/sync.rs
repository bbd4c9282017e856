//! The synchronisation primitives of the hand-rolled permit logic: `std`'s
//! atomics and `parking_lot`'s mutex, or loom's when the crate is built with
//! `--cfg watertight_loom` for the model checker.

#[cfg(watertight_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};
#[cfg(not(watertight_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(watertight_loom))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

/// loom's mutex behind `parking_lot`'s signature (no poisoning).
#[cfg(watertight_loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(watertight_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .expect("no test panics while holding the lock")
    }
}
