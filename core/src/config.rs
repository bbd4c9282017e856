//! The configuration error every watertight layer returns, and the checks
//! their builders share.
//!
//! Every layer validates its configuration when it is built and names the
//! field at fault, spelled as in the builder and the serde configuration
//! (`window.size` for a nested one). One type serves every layer, so a stack
//! that builds several layers from one file can nest their errors
//! ([`ConfigError::within`]) and report `retry.budget.ratio`.
//!
//! ```
//! use watertight_core::config::{self, ConfigError};
//!
//! fn validate(ratio: f64) -> Result<(), ConfigError> {
//!     config::fraction("retry", "budget.ratio", ratio)
//! }
//!
//! let err = validate(1.5).unwrap_err().within("client", "retry");
//! assert_eq!(err.field(), "retry.budget.ratio");
//! assert_eq!(
//!     err.to_string(),
//!     "invalid client configuration: `retry.budget.ratio` must be a fraction in (0, 1], got 1.5"
//! );
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// An invalid configuration: which component, which field, and what is wrong
/// with it.
///
/// Displays as ``invalid <component> configuration: `<field>` <reason>``.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    component: &'static str,
    field: Cow<'static, str>,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// An error in `field` of `component`'s configuration.
    pub fn new(
        component: &'static str,
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            component,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The component whose configuration is invalid (`circuit breaker`,
    /// `retry`, …).
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The field at fault, as spelled in the builder and the serde
    /// configuration.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The same error seen from an enclosing configuration: it becomes
    /// `component`'s, and its field is nested under `parent`.
    #[must_use]
    pub fn within(self, component: &'static str, parent: &str) -> Self {
        ConfigError {
            component,
            field: Cow::Owned(format!("{parent}.{}", self.field)),
            reason: self.reason,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} configuration: `{}` {}",
            self.component, self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// `value` must be a fraction in `(0, 1]`.
///
/// # Errors
///
/// A [`ConfigError`] naming `field` otherwise (NaN included).
pub fn fraction(
    component: &'static str,
    field: &'static str,
    value: f64,
) -> Result<(), ConfigError> {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            component,
            field,
            format!("must be a fraction in (0, 1], got {value}"),
        ))
    }
}

/// `value` must be finite and in `[lo, hi]`.
///
/// # Errors
///
/// A [`ConfigError`] naming `field` otherwise.
pub fn within_range(
    component: &'static str,
    field: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
) -> Result<(), ConfigError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(ConfigError::new(
            component,
            field,
            format!("must be in [{lo}, {hi}], got {value}"),
        ))
    }
}

/// `value` must be in `1..=max`.
///
/// # Errors
///
/// A [`ConfigError`] naming `field` otherwise.
pub fn count(
    component: &'static str,
    field: &'static str,
    value: u64,
    max: u64,
) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        Err(ConfigError::new(
            component,
            field,
            format!("must be in 1..={max}, got {value}"),
        ))
    } else {
        Ok(())
    }
}

/// `duration` must not be zero.
///
/// # Errors
///
/// A [`ConfigError`] naming `field` otherwise.
pub fn non_zero(
    component: &'static str,
    field: &'static str,
    duration: Duration,
) -> Result<(), ConfigError> {
    if duration.is_zero() {
        Err(ConfigError::new(
            component,
            field,
            "must be greater than zero",
        ))
    } else {
        Ok(())
    }
}

/// An instance name must not be empty (it labels metrics and traces).
///
/// # Errors
///
/// A [`ConfigError`] naming `name` otherwise.
pub fn name(component: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        Err(ConfigError::new(component, "name", "must not be empty"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field_and_the_value() {
        assert!(fraction("x", "ratio", 1.0).is_ok());
        let e = fraction("retry", "ratio", f64::NAN).unwrap_err();
        assert_eq!((e.component(), e.field()), ("retry", "ratio"));
        assert_eq!(
            within_range("x", "k", 0.5, 1.0, 10.0).unwrap_err().reason(),
            "must be in [1, 10], got 0.5"
        );
        assert!(within_range("x", "k", f64::INFINITY, 1.0, f64::MAX).is_err());
        assert_eq!(
            count("x", "probes", 0, 5).unwrap_err().reason(),
            "must be in 1..=5, got 0"
        );
        assert!(count("x", "probes", 5, 5).is_ok());
        assert_eq!(
            non_zero("bulkhead", "max_wait", Duration::ZERO)
                .unwrap_err()
                .to_string(),
            "invalid bulkhead configuration: `max_wait` must be greater than zero"
        );
        assert_eq!(name("x", "").unwrap_err().field(), "name");
    }

    #[test]
    fn nesting_keeps_the_reason_and_prefixes_the_field() {
        let e = ConfigError::new("circuit breaker", "window.size", "must be in 1..=10, got 0")
            .within("client", "breaker");
        assert_eq!(e.component(), "client");
        assert_eq!(e.field(), "breaker.window.size");
        assert_eq!(e.reason(), "must be in 1..=10, got 0");
    }
}
