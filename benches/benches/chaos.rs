//! Placeholder until this layer's benchmark lands.
fn main() {}
