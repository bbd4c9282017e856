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

/// The most nines the success-rate chart shows: 99.999%.
const MAX_NINES: f64 = 5.0;

/// A success rate as its number of nines (`0.99` → 2), capped at
/// [`MAX_NINES`]: the scale on which 99.9% and 99.99% look as different as
/// they are.
fn nines(rate: f64) -> f64 {
    if rate >= 1.0 {
        MAX_NINES
    } else {
        (-(1.0 - rate.max(0.0)).log10()).clamp(0.0, MAX_NINES)
    }
}

/// A success rate with as many decimals as tell it apart from 100%.
fn percent(rate: f64) -> String {
    let p = rate * 100.0;
    if rate >= 1.0 {
        "100%".to_owned()
    } else if p >= 99.99 {
        format!("{p:.4}%")
    } else if p >= 99.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Draws the comparison as an SVG: success rate (top, on a scale of nines:
/// 90%, 99%, 99.9%…) and p99 latency (bottom, log scale) per scenario, one
/// labelled bar per stack.
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
    let root = SVGBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(500);
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
    let value_font = ("sans-serif", 11)
        .into_font()
        .transform(FontTransform::Rotate270);
    // A stack's rows, each with the index of its scenario.
    let rows_of = |stack: &str| -> Vec<(usize, &ScenarioResult)> {
        comparison
            .results
            .iter()
            .filter(|r| r.stack == stack)
            .filter_map(|r| Some((scenarios.iter().position(|x| *x == r.scenario)?, r)))
            .collect()
    };

    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("success rate (scale of nines), seed {}", comparison.seed),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, 0.0..MAX_NINES + 1.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(scenarios.len() * 2 + 1)
        .x_label_formatter(&label_scenarios)
        .y_labels(7)
        .y_label_formatter(&|y| match y.round() as usize {
            0 => "0%".to_owned(),
            1 => "90%".to_owned(),
            k if k <= MAX_NINES as usize => format!("99.{}%", "9".repeat(k - 2)).replace(".%", "%"),
            _ => String::new(),
        })
        .draw()?;
    for (k, stack) in stacks.iter().enumerate() {
        let color = palette[k % palette.len()];
        let rows = rows_of(stack);
        chart
            .draw_series(rows.iter().map(|(s, r)| {
                let (x0, x1) = bar(*s, k);
                Rectangle::new([(x0, 0.0), (x1, nines(r.success_rate))], color.filled())
            }))?
            .label(*stack)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(rows.iter().map(|(s, r)| {
            let (x0, x1) = bar(*s, k);
            Text::new(
                percent(r.success_rate),
                ((x0 + x1) / 2.0 - width * 0.25, nines(r.success_rate) + 0.08),
                value_font.clone(),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    let max_p99 = comparison
        .results
        .iter()
        .map(|r| r.p99_ms)
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "p99 latency of all requests (ms, log scale)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, (1.0..max_p99 * 8.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(scenarios.len() * 2 + 1)
        .x_label_formatter(&label_scenarios)
        .draw()?;
    for (k, stack) in stacks.iter().enumerate() {
        let color = palette[k % palette.len()];
        let rows = rows_of(stack);
        chart.draw_series(rows.iter().map(|(s, r)| {
            let (x0, x1) = bar(*s, k);
            Rectangle::new([(x0, 1.0), (x1, r.p99_ms.max(1.0))], color.filled())
        }))?;
        chart.draw_series(rows.iter().map(|(s, r)| {
            let (x0, x1) = bar(*s, k);
            Text::new(
                format!("{:.0} ms", r.p99_ms),
                ((x0 + x1) / 2.0 - width * 0.25, r.p99_ms.max(1.0) * 1.15),
                value_font.clone(),
            )
        }))?;
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

#[cfg(test)]
mod tests {
    use watertight_testkit::scenario::ScenarioKind;
    use watertight_testkit::stacks::Unprotected;

    use super::*;
    use crate::stacks::TowerStack;

    #[test]
    fn rows_come_back_in_scenario_then_stack_order_as_single_runs_give_them() {
        let scenarios =
            [ScenarioKind::Steady, ScenarioKind::ZoneOutage].map(|k| Scenario::new(k).scaled(0.02));
        let stacks = [Entry::new(Unprotected), Entry::new(TowerStack)];
        let topology = Topology::default();
        let seen = Mutex::new(Vec::new());
        let comparison = compare(&scenarios, &stacks, &topology, 3, 2, &|done, total, _| {
            seen.lock().push((done, total));
        });
        let mut seen = seen.into_inner();
        seen.sort_unstable();
        assert_eq!(seen, [(1, 4), (2, 4), (3, 4), (4, 4)]);
        assert_eq!(comparison.seed, 3);
        let order: Vec<_> = comparison
            .results
            .iter()
            .map(|r| (r.scenario.as_str(), r.stack.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("steady", "none"),
                ("steady", "tower"),
                ("zone-outage", "none"),
                ("zone-outage", "tower"),
            ]
        );
        // Running on a pool changes nothing: each row is its run's alone.
        let alone = run(&scenarios[1], &topology, &TowerStack, 3);
        assert_eq!(
            comparison.results[3],
            ScenarioResult::new(ScenarioKind::ZoneOutage, "tower", &alone)
        );
    }

    #[test]
    fn success_rates_read_as_nines_and_as_many_decimals_as_they_need() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.999_999_9), MAX_NINES);
        assert_eq!(nines(1.0), MAX_NINES);
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.999_969), "99.9969%");
        assert_eq!(percent(0.9953), "99.53%");
        assert_eq!(percent(0.597_814), "59.8%");
    }
}
