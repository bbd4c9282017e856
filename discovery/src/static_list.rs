//! A fixed list of endpoints.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use watertight_core::{Change, Endpoint};

use crate::Error;

/// A source that yields one [`Change::Reset`] with a fixed list of endpoints
/// and then nothing more.
///
/// The stream stays pending after its one item instead of ending, so a
/// consumer that treats the end of a discovery stream as the loss of its
/// registry (as a balancer may) keeps the set.
///
/// ```
/// use futures_util::StreamExt;
/// use watertight_core::{Change, Endpoint};
/// use watertight_discovery::Static;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut source = Static::new([Endpoint::new("10.0.0.1:80".parse().unwrap())]);
/// let Some(Ok(Change::Reset(set))) = source.next().await else { panic!() };
/// assert_eq!(set.len(), 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Static {
    endpoints: Option<Vec<Endpoint>>,
}

impl Static {
    /// A source of `endpoints`.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        Static {
            endpoints: Some(endpoints.into_iter().collect()),
        }
    }
}

impl From<Vec<Endpoint>> for Static {
    fn from(endpoints: Vec<Endpoint>) -> Self {
        Static {
            endpoints: Some(endpoints),
        }
    }
}

impl Stream for Static {
    type Item = Result<Change, Error>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().endpoints.take() {
            Some(list) => Poll::Ready(Some(Ok(Change::Reset(list)))),
            // Nothing will ever change: no waker to register.
            None => Poll::Pending,
        }
    }
}
