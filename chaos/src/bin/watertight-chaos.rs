//! `watertight-chaos`: start, watch and halt fault-injection experiments on
//! a service (its admin API) or a fleet (etcd). See
//! `watertight_chaos::cli` for the commands and exit codes.

fn main() -> std::process::ExitCode {
    watertight_chaos::cli::main_with_args(std::env::args_os())
}
