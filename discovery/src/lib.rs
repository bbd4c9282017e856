//! Service discovery for watertight.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod discover;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub mod dns;
pub mod error;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
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
#[cfg(feature = "dns")]
pub use dns::{Dns, DnsBuilder};
pub use error::Error;
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdBuilder, Registration, RegistrationBuilder};
pub use ext::SourceExt;
#[cfg(feature = "file")]
pub use file::{File, FileBuilder, Format};
pub use guard::{Guard, GuardBuilder, GuardHandle, Guarded};
pub use static_list::Static;
