//! A circuit breaker for tower services.
