//! Fault injection for watertight: a chaos layer, experiments with safety rails, an admin API, a CLI and fleet control.
