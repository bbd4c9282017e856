//! Errors of discovery sources.
//!
//! A source never ends because of an error: it yields an [`Error`] item,
//! keeps its last good set, and carries on (re-reading, re-resolving,
//! reconnecting). Consumers log or count the item and move on; the
//! [`Guard`](crate::Guard) does both.

use std::fmt;
use std::path::{Path, PathBuf};

use watertight_core::BoxError;

/// An error item of a discovery source. The source keeps running and keeps
/// its last good set.
///
/// `Display` and `source()` are those of the variant's leaf error.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file source's file could not be parsed or holds an invalid endpoint;
    /// the last good set stays.
    InvalidFile(InvalidFile),
    /// An entry of a registry (an etcd key) does not hold a valid endpoint; it
    /// was skipped.
    InvalidEntry(InvalidEntry),
    /// The backend (file system, DNS resolver, etcd) could not be reached or
    /// failed; the last good set stays.
    Backend(Backend),
}

impl Error {
    /// The [`InvalidFile`] leaf, if this is one.
    pub fn as_invalid_file(&self) -> Option<&InvalidFile> {
        match self {
            Error::InvalidFile(e) => Some(e),
            _ => None,
        }
    }

    /// The [`InvalidEntry`] leaf, if this is one.
    pub fn as_invalid_entry(&self) -> Option<&InvalidEntry> {
        match self {
            Error::InvalidEntry(e) => Some(e),
            _ => None,
        }
    }

    /// The [`Backend`] leaf, if this is one.
    pub fn as_backend(&self) -> Option<&Backend> {
        match self {
            Error::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidFile(e) => fmt::Display::fmt(e, f),
            Error::InvalidEntry(e) => fmt::Display::fmt(e, f),
            Error::Backend(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::InvalidFile(e) => e.source(),
            Error::InvalidEntry(e) => e.source(),
            Error::Backend(e) => e.source(),
        }
    }
}

impl From<InvalidFile> for Error {
    fn from(e: InvalidFile) -> Self {
        Error::InvalidFile(e)
    }
}

impl From<InvalidEntry> for Error {
    fn from(e: InvalidEntry) -> Self {
        Error::InvalidEntry(e)
    }
}

impl From<Backend> for Error {
    fn from(e: Backend) -> Self {
        Error::Backend(e)
    }
}

/// An endpoints file that does not parse or holds an invalid endpoint.
///
/// Names the file, and where the parser knows them, the line and column and
/// the field at fault as a path into the document (`endpoints[2].weight`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidFile {
    pub(crate) path: PathBuf,
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl InvalidFile {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line of the error, if the parser reports one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The 1-based column of the error, if the parser reports one.
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// The field at fault as a path into the document, e.g.
    /// `endpoints[2].weight`, if known.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InvalidFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid endpoints file {}", self.path.display())?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " at line {l}, column {c}")?,
            (Some(l), None) => write!(f, " at line {l}")?,
            _ => {}
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for InvalidFile {}

/// A registry entry that does not hold a valid endpoint; it was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidEntry {
    pub(crate) key: String,
    pub(crate) message: String,
}

impl InvalidEntry {
    /// The key of the entry (lossily decoded as UTF-8).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InvalidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid endpoint at key {:?}, skipped: {}",
            self.key, self.message
        )
    }
}

impl std::error::Error for InvalidEntry {}

/// A backend that could not be reached or failed.
#[derive(Debug)]
pub struct Backend {
    pub(crate) source_kind: &'static str,
    pub(crate) target: String,
    pub(crate) error: BoxError,
}

impl Backend {
    /// A backend error of a source of kind `source_kind` (`file`, `dns`,
    /// `etcd`, or a custom source's) reading `target`, failing with `error`.
    pub fn new(
        source_kind: &'static str,
        target: impl Into<String>,
        error: impl Into<BoxError>,
    ) -> Self {
        Backend {
            source_kind,
            target: target.into(),
            error: error.into(),
        }
    }

    /// The kind of source: `file`, `dns` or `etcd`.
    pub fn source_kind(&self) -> &'static str {
        self.source_kind
    }

    /// What the source was reading: a path, a DNS name, an etcd prefix.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} source {} failed: {}",
            self.source_kind, self.target, self.error
        )
    }
}

impl std::error::Error for Backend {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// An invalid configuration of a source or a guard, naming the field; the
/// configuration error every watertight layer shares, with the component
/// `discovery`.
pub use watertight_core::ConfigError;

/// The component every [`ConfigError`] of this crate names.
pub(crate) const COMPONENT: &str = "discovery";
