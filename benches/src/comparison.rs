//! The scenario comparison: every scenario against every stack, side by side.
//!
//! Runs are independent simulations in virtual time, spread over the
//! machine's cores; each prints a progress line as it finishes. The result
//! is a [`Comparison`]: a table for the terminal, JSON for machines and an
//! SVG chart (success rate and p99 per scenario and stack).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use plotters::prelude::*;
use watertight_testkit::scenario::{run, Comparison, Scenario, ScenarioResult, Stack, Topology};
use watertight_testkit::Report;

/// Runs one scenario on a topology with a seed.
type RunFn = Box<dyn Fn(&Scenario, &Topology, u64) -> Report + Send + Sync>;

/// A stack in the comparison, type-erased.
pub struct Entry {
    name: String,
    run: RunFn,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// Enters `stack` in the comparison.
    pub fn new<S: Stack + Send + Sync + 'static>(stack: S) -> Self {
        Entry {
            name: stack.name(),
            run: Box::new(move |s, t, seed| run(s, t, &stack, seed)),
        }
    }

    /// The stack's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Runs every scenario against every stack with `seed` on `threads` threads,
/// calling `progress(done, total, row)` as runs finish. Rows come back in
/// scenario order, then stack order, whatever order they finished in.
pub fn compare(
    scenarios: &[Scenario],
    stacks: &[Entry],
    topology: &Topology,
    seed: u64,
    threads: usize,
    progress: &(dyn Fn(usize, usize, &ScenarioResult) + Sync),
) -> Comparison {
    let jobs: Vec<(usize, usize)> = (0..scenarios.len())
        .flat_map(|s| (0..stacks.len()).map(move |k| (s, k)))
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<ScenarioResult>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(s, k)) = jobs.get(i) else { break };
                let scenario = &scenarios[s];
                let report = (stacks[k].run)(scenario, topology, seed);
                let row = ScenarioResult::new(scenario.kind, &stacks[k].name, &report);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(n, jobs.len(), &row);
                rows.lock()[i] = Some(row);
            });
        }
    });
    let results = rows.into_inner().into_iter().flatten().collect();
    Comparison { seed, results }
}

/// Draws the comparison as an SVG: success rate (top) and p99 latency
/// (bottom, log scale) per scenario, one bar per stack.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_svg(comparison: &Comparison, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut scenarios: Vec<&str> = Vec::new();
    let mut stacks: Vec<&str> = Vec::new();
    for r in &comparison.results {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
        if !stacks.contains(&r.stack.as_str()) {
            stacks.push(&r.stack);
        }
    }
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let palette = [
        RGBColor(120, 120, 120),
        RGBColor(66, 133, 244),
        RGBColor(251, 140, 0),
        RGBColor(15, 157, 88),
    ];
    let n = scenarios.len().max(1) as f64;
    let width = 0.8 / stacks.len().max(1) as f64;
    let bar = |scenario: usize, stack: usize| {
        let x0 = scenario as f64 + 0.1 + stack as f64 * width;
        (x0, x0 + width * 0.9)
    };
    let label_scenarios = |x: &f64| {
        let i = x.floor() as usize;
        if (x - i as f64 - 0.5).abs() < 1e-9 {
            scenarios.get(i).map(|s| s.to_string()).unwrap_or_default()
        } else {
            String::new()
        }
    };

    let min_rate = comparison
        .results
        .iter()
        .map(|r| r.success_rate)
        .fold(1.0f64, f64::min);
    let floor = (min_rate * 100.0 - 5.0).clamp(0.0, 99.0).floor();
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("success rate (%), seed {}", comparison.seed),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, floor..100.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(scenarios.len() * 2 + 1)
        .x_label_formatter(&label_scenarios)
        .draw()?;
    for (k, stack) in stacks.iter().enumerate() {
        let color = palette[k % palette.len()];
        let bars = comparison
            .results
            .iter()
            .filter(|r| r.stack == *stack)
            .map(|r| {
                let s = scenarios.iter().position(|x| *x == r.scenario).unwrap_or(0);
                let (x0, x1) = bar(s, k);
                Rectangle::new([(x0, floor), (x1, r.success_rate * 100.0)], color.filled())
            });
        chart
            .draw_series(bars)?
            .label(*stack)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let max_p99 = comparison
        .results
        .iter()
        .map(|r| r.p99_ms)
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("p99 latency (ms, log scale)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, (1.0..max_p99 * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(scenarios.len() * 2 + 1)
        .x_label_formatter(&label_scenarios)
        .draw()?;
    for (k, stack) in stacks.iter().enumerate() {
        let color = palette[k % palette.len()];
        let bars = comparison
            .results
            .iter()
            .filter(|r| r.stack == *stack)
            .map(|r| {
                let s = scenarios.iter().position(|x| *x == r.scenario).unwrap_or(0);
                let (x0, x1) = bar(s, k);
                Rectangle::new([(x0, 1.0), (x1, r.p99_ms.max(1.0))], color.filled())
            });
        chart.draw_series(bars)?;
    }
    root.present()?;
    Ok(())
}

/// A progress line for one finished run.
pub fn progress_line(done: usize, total: usize, row: &ScenarioResult) -> String {
    format!(
        "[{done:>2}/{total}] {:<15} {:<17} success {:>8.4}%  p99 {:>7.1} ms  attempts {:.3}",
        row.scenario,
        row.stack,
        row.success_rate * 100.0,
        row.p99_ms,
        row.attempts_per_request
    )
}

/// How long the runs took, for the closing line.
pub fn elapsed_line(elapsed: Duration, runs: usize) -> String {
    format!("{runs} runs in {:.1} s", elapsed.as_secs_f64())
}
