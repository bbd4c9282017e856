//! Macros the crate's services share.

/// `get_ref`, `get_mut` and `into_inner`, inside the `impl` block of a
/// service that wraps an `inner: S` (as tower-http's
/// `define_inner_service_accessors`).
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service, by value.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
