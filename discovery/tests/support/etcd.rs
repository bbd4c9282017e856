//! The etcd process launcher.
