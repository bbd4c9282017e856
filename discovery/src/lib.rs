//! Service discovery for watertight.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod discover;
pub mod error;
mod ext;
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub mod file;
pub mod guard;
mod set;
mod static_list;
#[cfg(any(feature = "file", feature = "etcd"))]
mod wire;

pub use discover::ServiceDiscover;
pub use error::Error;
pub use ext::SourceExt;
#[cfg(feature = "file")]
pub use file::{File, FileBuilder, Format};
pub use guard::{Guard, GuardBuilder, GuardHandle, Guarded};
pub use static_list::Static;
