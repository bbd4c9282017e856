//! Errors of the chaos layer and its controller.
//!
//! An injected abort without an HTTP or gRPC status reaches the caller as an
//! [`Injected`] inside a [`BoxError`](watertight_core::BoxError); find it
//! with [`is_caused_by`](watertight_core::is_caused_by):
//!
//! ```
//! use watertight_chaos::error::Injected;
//! use watertight_core::{is_caused_by, BoxError};
//!
//! fn was_injected(err: &BoxError) -> bool {
//!     is_caused_by::<Injected>(&**err)
//! }
//! ```

use std::fmt;

/// A fault the chaos layer injected: the inner service was not called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    experiment: Option<String>,
    status: Option<u16>,
    grpc_status: Option<u16>,
}

impl Injected {
    pub(crate) fn new(experiment: Option<&str>, status: Option<u16>, grpc: Option<u16>) -> Self {
        Injected {
            experiment: experiment.map(str::to_owned),
            status,
            grpc_status: grpc,
        }
    }

    /// The experiment that injected the fault; `None` for a fault asked for
    /// by request headers.
    pub fn experiment(&self) -> Option<&str> {
        self.experiment.as_deref()
    }

    /// The HTTP status the fault asked for, when a service that is not an
    /// HTTP service (the plain [`Chaos`](crate::Chaos)) had to report it as
    /// an error.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The gRPC status code the fault asked for, in the same case.
    pub fn grpc_status(&self) -> Option<u16> {
        self.grpc_status
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fault injected")?;
        if let Some(name) = &self.experiment {
            write!(f, " by experiment `{name}`")?;
        }
        if let Some(s) = self.status {
            write!(f, " (status {s})")?;
        }
        if let Some(s) = self.grpc_status {
            write!(f, " (grpc-status {s})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Injected {}

/// An invalid controller configuration, naming the field at fault; the
/// configuration error every watertight layer shares, with the component
/// `chaos`.
pub use watertight_core::ConfigError;

/// An experiment field that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidExperiment {
    field: String,
    reason: String,
}

impl InvalidExperiment {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidExperiment {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field at fault, as a path in the experiment's JSON or TOML form:
    /// `name`, `faults[1].percent`, `abort_when.window`; `.` for the whole
    /// document (a syntax error).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for InvalidExperiment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "." {
            write!(f, "invalid experiment: {}", self.reason)
        } else {
            write!(f, "invalid experiment: `{}` {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for InvalidExperiment {}

/// A fault whose `type` names no fault this crate knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFault {
    field: String,
    fault_type: String,
}

impl UnknownFault {
    pub(crate) fn new(field: impl Into<String>, fault_type: impl Into<String>) -> Self {
        UnknownFault {
            field: field.into(),
            fault_type: fault_type.into(),
        }
    }

    /// The field, `faults[i].type`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The unknown type as written.
    pub fn fault_type(&self) -> &str {
        &self.fault_type
    }
}

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown fault type {:?} at `{}`; known: {}",
            self.fault_type,
            self.field,
            crate::fault::FAULT_TYPES.join(", ")
        )
    }
}

impl std::error::Error for UnknownFault {}

/// Why an experiment could not be read or built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExperimentError {
    /// A field breaks a rule, or the document is malformed.
    Invalid(InvalidExperiment),
    /// A fault's `type` is unknown.
    UnknownFault(UnknownFault),
}

impl ExperimentError {
    /// The field at fault (see [`InvalidExperiment::field`]).
    pub fn field(&self) -> &str {
        match self {
            ExperimentError::Invalid(e) => e.field(),
            ExperimentError::UnknownFault(e) => e.field(),
        }
    }
}

impl fmt::Display for ExperimentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExperimentError::Invalid(e) => fmt::Display::fmt(e, f),
            ExperimentError::UnknownFault(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for ExperimentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExperimentError::Invalid(e) => Some(e),
            ExperimentError::UnknownFault(e) => Some(e),
        }
    }
}

impl From<InvalidExperiment> for ExperimentError {
    fn from(e: InvalidExperiment) -> Self {
        ExperimentError::Invalid(e)
    }
}

impl From<UnknownFault> for ExperimentError {
    fn from(e: UnknownFault) -> Self {
        ExperimentError::UnknownFault(e)
    }
}

/// Why [`ChaosController::start`](crate::ChaosController::start) refused an
/// experiment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// The experiment breaks a rule of this controller (its `duration`
    /// exceeds `max_experiment_duration`).
    Invalid(InvalidExperiment),
    /// An experiment of that name is already running.
    AlreadyRunning(String),
    /// The controller already runs its maximum number of experiments.
    TooManyExperiments(usize),
    /// Called outside a tokio runtime: an experiment needs one for its
    /// time-to-live and its steady-state guard.
    NoRuntime,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Invalid(e) => fmt::Display::fmt(e, f),
            StartError::AlreadyRunning(name) => {
                write!(f, "an experiment named `{name}` is already running")
            }
            StartError::TooManyExperiments(max) => {
                write!(
                    f,
                    "the controller already runs its maximum of {max} experiments"
                )
            }
            StartError::NoRuntime => {
                f.write_str("experiments must be started from within a tokio runtime")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl From<InvalidExperiment> for StartError {
    fn from(e: InvalidExperiment) -> Self {
        StartError::Invalid(e)
    }
}

/// No experiment of that name is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFound {
    name: String,
}

impl NotFound {
    pub(crate) fn new(name: &str) -> Self {
        NotFound {
            name: name.to_owned(),
        }
    }

    /// The name asked for.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no experiment named `{}` is running", self.name)
    }
}

impl std::error::Error for NotFound {}
