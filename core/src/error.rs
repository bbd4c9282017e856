use std::error::Error;

/// The error type of layers that add failure modes of their own.
///
/// A pass-through layer keeps its inner service's error type; a layer that can
/// fail by itself (an open breaker, a full bulkhead, an exhausted budget)
/// returns `BoxError`, and its own failures are small public structs that
/// callers find with [`is_caused_by`].
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Returns `true` if `err`, or any error in its [`source`](Error::source)
/// chain, is an `E`.
///
/// ```
/// use watertight_core::{is_caused_by, BoxError};
///
/// #[derive(Debug)]
/// struct Refused;
/// impl std::fmt::Display for Refused {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("refused")
///     }
/// }
/// impl std::error::Error for Refused {}
///
/// let err: BoxError = Box::new(Refused);
/// assert!(is_caused_by::<Refused>(&*err));
/// assert!(!is_caused_by::<std::io::Error>(&*err));
/// ```
pub fn is_caused_by<E: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    find_cause::<E>(err).is_some()
}

/// Returns the first `E` in `err`'s [`source`](Error::source) chain,
/// starting with `err` itself.
pub fn find_cause<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Leaf;
    impl fmt::Display for Leaf {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("leaf")
        }
    }
    impl Error for Leaf {}

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn finds_cause_through_source_chain() {
        let err: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(Leaf)))));
        assert!(is_caused_by::<Leaf>(&*err));
        assert!(is_caused_by::<Wrapper>(&*err));
        assert!(!is_caused_by::<std::io::Error>(&*err));
        assert!(find_cause::<Leaf>(&*err).is_some());
    }
}
