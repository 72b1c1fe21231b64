//! Data loading speed: the Criteo raw text reader (lines per second, one thread) and the
//! MLPerf binary reader (samples per second into batches of 2048), on a generated file of
//! 200,000 lines with empty fields and full-width hex values.
//!
//! Run: `cargo bench --bench data`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Line, print_summary};
use criterion::{Criterion, Throughput};
use dlrm_kernels::data::binary::{self, BinaryReader};
use dlrm_kernels::data::criteo::{FilePart, OnMalformed, RawReader};
use dlrm_kernels::rng::Rng;

const LINES: usize = 200_000;

fn write_file(path: &PathBuf) {
    let mut rng = Rng::new(1);
    let mut text = String::with_capacity(LINES * 200);
    for _ in 0..LINES {
        text.push_str(if rng.below(4) == 0 { "1" } else { "0" });
        for _ in 0..13 {
            text.push('\t');
            if rng.below(6) != 0 {
                text.push_str(&rng.below(5000).to_string());
            }
        }
        for _ in 0..26 {
            text.push('\t');
            if rng.below(10) != 0 {
                text.push_str(&format!("{:08x}", rng.next_u64() as u32));
            }
        }
        text.push('\n');
    }
    std::fs::write(path, text).expect("write the test file");
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let dir = std::env::temp_dir();
    let raw = dir.join(format!("dlrm-bench-{}.txt", std::process::id()));
    let bin = dir.join(format!("dlrm-bench-{}.bin", std::process::id()));
    write_file(&raw);
    let part = || {
        vec![FilePart {
            path: raw.clone(),
            first_line: 0,
            lines: None,
        }]
    };
    binary::convert(part(), OnMalformed::Fail, &bin).expect("convert");
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Elements(LINES as u64));
    g.bench_function("criteo_raw_lines", |b| {
        b.iter(|| {
            let mut r = RawReader::new(part(), OnMalformed::Fail);
            let mut n = 0;
            while r.next_record().expect("parse").is_some() {
                n += 1;
            }
            assert_eq!(n, LINES);
        })
    });
    g.bench_function("criteo_raw_batches", |b| {
        b.iter(|| {
            let mut r = RawReader::new(part(), OnMalformed::Fail);
            while r.next_batch(2048, 10_000_000).expect("parse").is_some() {}
        })
    });
    let reader = BinaryReader::open(&bin, 2048, 10_000_000).expect("open");
    g.bench_function("binary_batches", |b| {
        b.iter(|| {
            for i in 0..reader.batches() {
                std::hint::black_box(reader.batch(i).expect("batch"));
            }
        })
    });
    g.finish();
    c.final_summary();
    let line = |id: &str| Line {
        group: "data".into(),
        id: id.into(),
        work: LINES as f64 * 1e3, // per ns -> M/s: work in samples x 1e3 / ns = M samples/s
        unit: "M lines/s",
        versus: None,
    };
    print_summary(
        "data loading, one thread",
        &[
            line("criteo_raw_lines"),
            line("criteo_raw_batches"),
            line("binary_batches"),
        ],
    );
    std::fs::remove_file(raw).ok();
    std::fs::remove_file(bin).ok();
}
