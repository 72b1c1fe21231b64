//! Shared by the benchmarks: reading criterion's medians back and printing each result as a
//! rate and as a fraction of a peak (or a ratio to a baseline) measured in the same run.

#![allow(dead_code)]

use std::path::PathBuf;

/// One line of the summary printed after criterion finishes.
pub struct Line {
    /// Criterion group and benchmark id (`function/parameter`).
    pub group: String,
    pub id: String,
    /// Work per iteration (FLOP, bytes or lookups) and its unit when divided by time
    /// (e.g. "GFLOP/s" with work in FLOP and time in ns).
    pub work: f64,
    pub unit: &'static str,
    /// What to compare with: (label, group, id, work) of another line.
    pub versus: Option<(String, String, String, f64)>,
}

fn criterion_dir() -> PathBuf {
    if let Ok(home) = std::env::var("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("criterion")
}

/// Median time per iteration in ns, from criterion's saved estimates (None if not run).
pub fn median_ns(group: &str, id: &str) -> Option<f64> {
    // `bench_function("a/b")` is saved as `a_b`; `BenchmarkId::new("a", "b")` as `a/b`.
    let text = [id.to_string(), id.replace('/', "_")]
        .iter()
        .find_map(|id| {
            let path = criterion_dir()
                .join(group)
                .join(id)
                .join("new/estimates.json");
            std::fs::read_to_string(path).ok()
        })?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Print a table of rate and comparison for every line that ran, after the machine and the
/// kernel configuration it ran with (CPU, backend, register tile, bf16 path).
pub fn print_summary(title: &str, lines: &[Line]) {
    println!("\n== {title}: medians ==");
    println!("{}", dlrm_microkernels::diagnostics::Diagnostics::get());
    println!(
        "{:<28} {:<34} {:>12} {:>10}  versus",
        "group", "id", "rate", "unit"
    );
    for l in lines {
        let Some(ns) = median_ns(&l.group, &l.id) else {
            continue;
        };
        let rate = l.work / ns;
        let versus = match &l.versus {
            Some((label, g, i, w)) => match median_ns(g, i) {
                Some(ns2) => format!("{:.1}% of {label}", 100.0 * rate / (w / ns2)),
                None => String::new(),
            },
            None => String::new(),
        };
        println!(
            "{:<28} {:<34} {:>12.2} {:>10}  {versus}",
            l.group, l.id, rate, l.unit
        );
    }
}
