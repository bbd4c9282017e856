//! Model-checks the permit logic under every interleaving loom explores:
//! `RUSTFLAGS="--cfg watertight_loom" cargo test --release --test loom`.
#![cfg(watertight_loom)]
