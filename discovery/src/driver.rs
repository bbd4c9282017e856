//! Sources written as async state machines.

use std::future::Future;
use std::pin::Pin;

use futures_core::Stream;
use watertight_core::Change;

use crate::Error;

/// The boxed stream every source wraps.
pub(crate) type BoxSource = Pin<Box<dyn Stream<Item = Result<Change, Error>> + Send>>;

/// A source written as an async state machine: `next` produces the next item.
pub(crate) trait Driver: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Result<Change, Error>> + Send + '_;
}

/// Turns a driver into a stream that never ends. Nothing runs until it is
/// polled, and dropping it cancels whatever the driver was doing.
pub(crate) fn drive<D: Driver>(driver: D) -> BoxSource {
    Box::pin(futures_util::stream::unfold(driver, |mut d| async move {
        let item = d.next().await;
        Some((item, d))
    }))
}
