//! Service discovery for watertight.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod discover;
pub mod error;
mod ext;
pub mod guard;
mod set;
mod static_list;

pub use discover::ServiceDiscover;
pub use error::Error;
pub use ext::SourceExt;
pub use guard::{Guard, GuardBuilder, GuardHandle, Guarded};
pub use static_list::Static;
