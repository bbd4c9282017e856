//! The resilience benchmark: seven kinds of trouble, four client stacks,
//! side by side.
//!
//! Nine simulated backends in zones a, b and c; three clients, one per
//! zone, each with its own instance of the stack under test and a third of
//! the load; everything in virtual time, so minutes of traffic take
//! seconds. The stacks: `none` (round robin, no retries), `tower` (tower's
//! P2C balancer, retry and timeout), `tower-resilience` (tower's balancer
//! with tower-resilience's breaker and retry) and `watertight` (the
//! recommended stack of `watertight::stack`, its defaults). BENCHMARKS.md
//! says how each is configured.
//!
//! It prints a line per finished run, then the table; writes the table as
//! JSON (`target/scenarios.json`, or `--json FILE`) and a chart of success
//! rate and p99 per scenario and stack next to it (the same name, `.svg`).
//!
//! ```sh
//! cargo run --release --example scenarios
//! cargo run --release --example scenarios -- --scenario brownout --stack watertight --stack tower
//! cargo run --release --example scenarios -- --config my-client.toml   # a watertight ClientConfig
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use watertight::stack::ClientConfig;
use watertight_benches::comparison::{compare, elapsed_line, progress_line, write_svg, Entry};
use watertight_benches::stacks::{TowerResilienceStack, TowerStack};
use watertight_testkit::scenario::{Scenario, ScenarioKind, Topology};
use watertight_testkit::stacks::{Unprotected, Watertight};

/// Every scenario against every stack, in virtual time.
#[derive(Parser, Debug)]
#[command(name = "scenarios")]
struct Args {
    /// Where to write the results as JSON; the SVG chart goes next to it.
    #[arg(long, default_value = "target/scenarios.json")]
    json: PathBuf,
    /// The seed of every random choice: the same seed gives the same
    /// results.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run only this scenario (repeatable): steady, zone-outage,
    /// zone-blackhole, gray-failure, flapping, brownout, overload.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Run only this stack (repeatable): none, tower, tower-resilience,
    /// watertight.
    #[arg(long = "stack", value_name = "NAME")]
    stacks: Vec<String>,
    /// A watertight `ClientConfig` (TOML) for the watertight stack instead
    /// of the recommended defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Shorten (or lengthen) every scenario by this factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Simulations run at once (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    match compare_all(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().trim_end());
            ExitCode::FAILURE
        }
    }
}

fn compare_all(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = match &args.config {
        Some(path) => toml::from_str::<ClientConfig>(&std::fs::read_to_string(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => ClientConfig::default(),
    };
    let mut stacks = vec![
        Entry::new(Unprotected),
        Entry::new(TowerStack),
        Entry::new(TowerResilienceStack),
        Entry::new(Watertight::new(config)?),
    ];
    for name in &args.stacks {
        if !stacks.iter().any(|s| s.name() == name) {
            return Err(format!(
                "unknown stack `{name}`: none, tower, tower-resilience or watertight"
            )
            .into());
        }
    }
    if !args.stacks.is_empty() {
        stacks.retain(|s| args.stacks.iter().any(|n| n == s.name()));
    }
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        return Err(format!("--scale must be a positive number, got {}", args.scale).into());
    }
    let mut scenarios: Vec<Scenario> = Vec::new();
    for kind in ScenarioKind::ALL {
        if args.scenarios.is_empty() || args.scenarios.iter().any(|n| n == kind.name()) {
            scenarios.push(Scenario::new(kind).scaled(args.scale));
        }
    }
    if let Some(name) = args
        .scenarios
        .iter()
        .find(|n| ScenarioKind::ALL.iter().all(|k| k.name() != n.as_str()))
    {
        return Err(format!("unknown scenario `{name}`").into());
    }

    let topology = Topology::default();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let runs = scenarios.len() * stacks.len();
    println!(
        "{} scenarios × {} stacks = {runs} runs on {threads} threads, seed {}",
        scenarios.len(),
        stacks.len(),
        args.seed
    );
    // Wall-clock time of the whole comparison (the runs are in virtual time).
    let started = tokio::time::Instant::now();
    let comparison = compare(
        &scenarios,
        &stacks,
        &topology,
        args.seed,
        threads,
        &|done, total, row| println!("{}", progress_line(done, total, row)),
    );
    let elapsed = started.elapsed();

    println!();
    print!("{}", comparison.table());
    println!("{}", elapsed_line(elapsed, runs));

    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, comparison.to_json())?;
    let svg = args.json.with_extension("svg");
    write_svg(&comparison, &svg)?;
    println!("wrote {} and {}", args.json.display(), svg.display());
    Ok(())
}
