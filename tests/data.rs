//! Data: the random generator's semantics, the Criteo raw reader, the binary format and its
//! converter, splits, and the prefetcher.

use std::path::{Path, PathBuf};

use dlrm_kernels::Error;
use dlrm_kernels::data::binary::{self, BinaryReader};
use dlrm_kernels::data::criteo::{
    Dataset, FilePart, OnMalformed, RawReader, count_lines, dense_transform, split_parts,
};
use dlrm_kernels::data::prefetch::Prefetcher;
use dlrm_kernels::data::random::{RandomData, RandomDataConfig};
use dlrm_kernels::data::synthetic::{SyntheticConfig, SyntheticData};
use dlrm_kernels::data::{MiniBatch, Split};
use dlrm_kernels::rng::Rng;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dlrm-data-{}-{name}", std::process::id()))
}

#[test]
fn random_generator_follows_the_reference() {
    for fixed in [false, true] {
        let cfg = RandomDataConfig {
            dense_features: 5,
            table_rows: vec![1000, 3, 50],
            batch_size: 200,
            indices_per_lookup: 7,
            indices_per_lookup_fixed: fixed,
            round_targets: true,
            seed: 9,
        };
        let data = RandomData::new(cfg.clone()).unwrap();
        let b = data.batch(4);
        assert_eq!(b, data.batch(4), "deterministic");
        assert_ne!(b, data.batch(5));
        assert_eq!(b.dense.len(), 200 * 5);
        assert!(b.dense.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert!(b.targets.iter().all(|&y| y == 0.0 || y == 1.0));
        let mut lengths = Vec::new();
        for (t, &rows) in cfg.table_rows.iter().enumerate() {
            let (idx, off) = (&b.indices[t], &b.offsets[t]);
            assert_eq!(off.len(), 200);
            assert_eq!(off[0], 0);
            for i in 0..200 {
                let end = if i + 1 < 200 {
                    off[i + 1]
                } else {
                    idx.len() as i64
                };
                let bag = &idx[off[i] as usize..end as usize];
                assert!(!bag.is_empty() && bag.len() <= 7.min(if fixed { 7 } else { rows }));
                assert!(
                    bag.windows(2).all(|w| w[0] < w[1]),
                    "sorted and unique: {bag:?}"
                );
                assert!(bag.iter().all(|&r| (0..rows as i64).contains(&r)));
                if t == 0 {
                    lengths.push(bag.len());
                }
            }
        }
        if fixed {
            // 7 draws of 1000 rows rarely collide.
            assert!(lengths.iter().filter(|&&l| l == 7).count() > 180);
        } else {
            // round(max(1, r * 7)): every length 1..=7 appears.
            for l in 1..=7 {
                assert!(lengths.contains(&l), "length {l} never drawn");
            }
        }
    }
    let unrounded = RandomData::new(RandomDataConfig {
        round_targets: false,
        ..RandomDataConfig::default()
    })
    .unwrap()
    .batch(0);
    assert!(unrounded.targets.iter().any(|&y| y != 0.0 && y != 1.0));
    // Long bags (past the in-register sort) are sorted and unique too.
    let long = RandomData::new(RandomDataConfig {
        table_rows: vec![500],
        indices_per_lookup: 400,
        indices_per_lookup_fixed: true,
        ..RandomDataConfig::default()
    })
    .unwrap()
    .batch(1);
    let (idx, off) = (&long.indices[0], &long.offsets[0]);
    for (i, &start) in off.iter().enumerate() {
        let end = off.get(i + 1).map_or(idx.len(), |&e| e as usize);
        let bag = &idx[start as usize..end];
        assert!(bag.len() > 200 && bag.windows(2).all(|w| w[0] < w[1]) && bag[bag.len() - 1] < 500);
    }
    // More rows than an embedding table can have.
    let huge = RandomDataConfig {
        table_rows: vec![10, u32::MAX as usize + 1],
        ..RandomDataConfig::default()
    };
    let err = RandomData::new(huge).unwrap_err().to_string();
    assert!(err.contains("table 1 has 4294967296 rows"), "{err}");
}

#[test]
fn synthetic_data_is_skewed_and_deterministic() {
    let data = SyntheticData::new(SyntheticConfig::default()).unwrap();
    let b = data.batch(1);
    assert_eq!(b, data.batch(1));
    let rows = SyntheticConfig::default().table_rows[0] as i64;
    let low = b.indices[0].iter().filter(|&&r| r < rows / 10).count();
    // u^3 < 0.1 for u < 0.46: about 46% of lookups hit the lowest tenth (10% if uniform).
    assert!(
        low > b.len() * 3 / 10,
        "power-law popularity: {low} of {} in the lowest tenth",
        b.len()
    );
}

/// A Criteo line from values (None = empty field).
fn line(label: &str, dense: &[Option<i64>], cat: &[Option<u32>]) -> String {
    let mut s = label.to_string();
    for d in dense {
        s.push('\t');
        if let Some(v) = d {
            s.push_str(&v.to_string());
        }
    }
    for c in cat {
        s.push('\t');
        if let Some(v) = c {
            s.push_str(&format!("{v:08x}"));
        }
    }
    s
}

/// A file of random lines with empty fields, negative values and large hex values.
fn write_raw(path: &PathBuf, lines: usize, seed: u64) -> Vec<(i32, Vec<i64>, Vec<u32>)> {
    let mut rng = Rng::new(seed);
    let mut text = String::new();
    let mut truth = Vec::new();
    for _ in 0..lines {
        let label = rng.below(2) as i32;
        let dense: Vec<Option<i64>> = (0..13)
            .map(|_| match rng.below(5) {
                0 => None,
                1 => Some(-(rng.below(5) as i64)),
                _ => Some(rng.below(100_000) as i64),
            })
            .collect();
        let cat: Vec<Option<u32>> = (0..26)
            .map(|_| match rng.below(6) {
                0 => None,
                1 => Some(u32::MAX - rng.below(10) as u32),
                _ => Some(rng.next_u64() as u32),
            })
            .collect();
        text.push_str(&line(&label.to_string(), &dense, &cat));
        text.push('\n');
        truth.push((
            label,
            dense.iter().map(|d| d.unwrap_or(0).max(0)).collect(),
            cat.iter().map(|c| c.unwrap_or(0)).collect(),
        ));
    }
    std::fs::write(path, text).unwrap();
    truth
}

fn whole(path: &Path) -> Vec<FilePart> {
    vec![FilePart {
        path: path.to_path_buf(),
        first_line: 0,
        lines: None,
    }]
}

#[test]
fn raw_reader_parses_empty_negative_and_large_fields() {
    let path = tmp("raw.txt");
    let truth = write_raw(&path, 300, 1);
    let max_ind = 1_000_003u32;
    let mut reader = RawReader::new(whole(&path), OnMalformed::Fail);
    let mut seen = 0;
    while let Some(b) = reader.next_batch(64, max_ind).unwrap() {
        for i in 0..b.len() {
            let (label, dense, cat) = &truth[seen + i];
            assert_eq!(b.targets[i], *label as f32);
            for (j, &d) in dense.iter().enumerate() {
                assert_eq!(b.dense[i * 13 + j], dense_transform(d as i32));
            }
            for (t, &c) in cat.iter().enumerate() {
                assert_eq!(b.indices[t][i], (c % max_ind) as i64);
                assert_eq!(b.offsets[t][i], i as i64);
            }
        }
        seen += b.len();
    }
    assert_eq!(seen, 300);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn malformed_lines_are_reported_with_file_and_line_or_skipped() {
    let path = tmp("bad.txt");
    let good = line("1", &[Some(1); 13], &[Some(2); 26]);
    let cases = [
        (
            line("2", &[Some(1); 13], &[Some(2); 26]),
            "label \"2\", expected 0 or 1",
        ),
        (
            line("0", &[Some(1); 12], &[Some(2); 26]),
            "39 fields, expected 40",
        ),
        (format!("{good}\textra"), "41 fields, expected 40"),
        (
            good.replacen("\t1", "\tx1", 1),
            "dense feature I1 \"x1\" is not an integer",
        ),
        (
            format!("{good}0"),
            "categorical feature C26 \"000000020\" is not 32-bit hexadecimal",
        ),
        (
            good.replace("00000002", "0000000g"),
            "categorical feature C1 \"0000000g\" is not 32-bit hexadecimal",
        ),
    ];
    for (bad, want) in &cases {
        std::fs::write(&path, format!("{good}\n{good}\n{bad}\n{good}\n")).unwrap();
        let mut reader = RawReader::new(whole(&path), OnMalformed::Fail);
        let err = loop {
            match reader.next_record() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error for {bad:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.to_string(), format!("{}:3: {want}", path.display()));
        let mut skipping = RawReader::new(whole(&path), OnMalformed::Skip);
        let mut n = 0;
        while skipping.next_record().unwrap().is_some() {
            n += 1;
        }
        assert_eq!((n, skipping.skipped()), (3, 1));
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn raw_to_binary_to_reader_round_trip() {
    let raw = tmp("rt.txt");
    let bin = tmp("rt.bin");
    write_raw(&raw, 250, 2);
    let (n, skipped) = binary::convert(whole(&raw), OnMalformed::Fail, &bin).unwrap();
    assert_eq!((n, skipped), (250, 0));
    let max_ind = 5000;
    let reader = BinaryReader::open(&bin, 64, max_ind).unwrap();
    assert_eq!((reader.records(), reader.batches()), (250, 4));
    let mut raw_reader = RawReader::new(whole(&raw), OnMalformed::Fail);
    for i in 0..reader.batches() {
        let want: MiniBatch = raw_reader.next_batch(64, max_ind).unwrap().unwrap();
        assert_eq!(reader.batch(i).unwrap(), want, "batch {i}");
    }
    assert_eq!(reader.batch(3).unwrap().len(), 250 - 3 * 64);
    assert!(reader.batch(4).is_err());
    // Shuffled whole batches: a permutation, reproducible from the seed.
    let order = reader.order(Some(3));
    assert_eq!(order, reader.order(Some(3)));
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3]);

    // Truncated: reported, not mis-read.
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() - 7]).unwrap();
    let err = BinaryReader::open(&bin, 64, max_ind).unwrap_err();
    assert!(matches!(err, Error::Data { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("not a whole number of 160-byte records")
    );
    // A record with a bad label is named.
    let mut bad = bytes.clone();
    bad[160 * 7..160 * 7 + 4].copy_from_slice(&5i32.to_le_bytes());
    std::fs::write(&bin, &bad).unwrap();
    let err = BinaryReader::open(&bin, 64, max_ind)
        .unwrap()
        .batch(0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:8: record label 5, expected 0 or 1", bin.display())
    );
    std::fs::remove_file(&raw).unwrap();
    std::fs::remove_file(&bin).unwrap();
}

#[test]
fn splits_follow_the_reference() {
    let raw = tmp("kaggle.txt");
    write_raw(&raw, 71, 3);
    assert_eq!(count_lines(&raw).unwrap(), 71);
    let parts = |s| split_parts(Dataset::Kaggle, &raw, s).unwrap();
    // 71 lines: 7 days of 10, the last day 11 lines: test 6, validation 5.
    assert_eq!(
        (
            parts(Split::Train)[0].first_line,
            parts(Split::Train)[0].lines
        ),
        (0, Some(60))
    );
    assert_eq!(
        (
            parts(Split::Test)[0].first_line,
            parts(Split::Test)[0].lines
        ),
        (60, Some(6))
    );
    assert_eq!(
        (
            parts(Split::Validation)[0].first_line,
            parts(Split::Validation)[0].lines
        ),
        (66, Some(5))
    );
    let mut r = RawReader::new(parts(Split::Validation), OnMalformed::Fail);
    let mut n = 0;
    while r.next_record().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
    let day = tmp("day");
    for d in 0..3 {
        write_raw(
            &PathBuf::from(format!("{}_{d}", day.display())),
            10 + d,
            d as u64,
        );
    }
    let tb = |s| split_parts(Dataset::Terabyte { days: 3 }, &day, s).unwrap();
    assert_eq!(tb(Split::Train).len(), 2);
    assert_eq!(tb(Split::Test)[0].lines, Some(6));
    assert_eq!(
        (
            tb(Split::Validation)[0].first_line,
            tb(Split::Validation)[0].lines
        ),
        (6, Some(6))
    );
    for d in 0..3 {
        std::fs::remove_file(format!("{}_{d}", day.display())).unwrap();
    }
    std::fs::remove_file(&raw).unwrap();
}

#[test]
fn prefetcher_keeps_order_and_stops_at_an_error() {
    let items: Vec<_> = (0..4)
        .map(|i| {
            if i == 2 {
                Err(Error::Config("broken".into()))
            } else {
                Ok(MiniBatch {
                    targets: vec![i as f32],
                    ..MiniBatch::default()
                })
            }
        })
        .collect();
    for background in [true, false] {
        let mut p = Prefetcher::new(items.clone().into_iter(), background, 1);
        assert_eq!(p.is_background(), background);
        let got: Vec<_> = p.by_ref().collect();
        assert_eq!(got.len(), 3, "background {background}");
        assert_eq!(got[1].as_ref().unwrap().targets, [1.0]);
        assert!(got[2].is_err());
        assert!(p.next().is_none(), "the stream ends at the error");
    }
    // In line, producing a batch is waiting for it.
    let slow = (0..2).map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        Ok(MiniBatch::default())
    });
    let mut p = Prefetcher::inline(slow);
    assert_eq!(p.by_ref().count(), 2);
    assert!(p.waited() >= std::time::Duration::from_millis(40));
    // Dropping early does not hang.
    let endless = (0..).map(|i| {
        Ok(MiniBatch {
            targets: vec![i as f32],
            ..MiniBatch::default()
        })
    });
    let mut p = Prefetcher::spawn(endless, 2);
    assert!(p.next().is_some());
    drop(p);
}

/// Empty fields read as 0, the label included (as the reference reads them).
#[test]
fn an_empty_label_reads_as_zero() {
    use dlrm_kernels::data::criteo::{Record, parse_line};
    let mut fields = vec![""; 40];
    fields[1] = "7";
    fields[14] = "ff";
    let line = fields.join("\t");
    let mut r = Record {
        label: 1,
        ..Record::default()
    };
    parse_line(line.as_bytes(), &mut r).unwrap();
    assert_eq!((r.label, r.dense[0], r.cat[0]), (0, 7, 0xff));
    // Other labels are still refused, and a line of the wrong length still is.
    fields[0] = "2";
    let err = parse_line(fields.join("\t").as_bytes(), &mut r).unwrap_err();
    assert_eq!(err, "label \"2\", expected 0 or 1");
    assert_eq!(
        parse_line(b"", &mut r).unwrap_err(),
        "1 fields, expected 40"
    );
}

/// A Kaggle-format file through the Criteo source: converted once to the binary files,
/// read back from them (the raw file is not needed again), the training batches capped and
/// shuffled per epoch as whole batches.
#[test]
fn criteo_source_converts_once_and_serves_batches_in_any_order() {
    use dlrm_kernels::data::binary::BinaryData;
    use dlrm_kernels::data::criteo::{CriteoData, CriteoFiles, CriteoOptions};
    use dlrm_kernels::data::{BatchSource, Part};
    let raw = tmp("criteo-source.txt");
    write_raw(&raw, 700, 3); // 600 training lines, 50 test, 50 validation
    let files = CriteoFiles {
        raw: Some(raw.clone()),
        ..CriteoFiles::default()
    };
    let options = CriteoOptions {
        batch_size: 64,
        test_batch_size: 32,
        max_ind_range: 1000,
        ..CriteoOptions::default()
    };
    let mut lines = Vec::new();
    let data = CriteoData::open(&files, options, &mut |l| lines.push(l)).unwrap();
    assert!(lines[0].starts_with("converting "), "{lines:?}");
    assert_eq!(
        (data.batches(Split::Train), data.batches(Split::Test)),
        (10, 2)
    );
    assert_eq!(
        (data.dense_features(), data.table_rows()),
        (13, vec![1000; 26])
    );
    // Made once: a second open converts nothing and serves the same batches.
    let mut again = Vec::new();
    let reopened = CriteoData::open(&files, options, &mut |l| again.push(l)).unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        reopened.batch(Split::Train, 0, 3).unwrap(),
        data.batch(Split::Train, 0, 3).unwrap()
    );
    // Shuffled: every batch once per epoch, in an order of its own per epoch.
    let shuffled = reopened.map_binary(|b| b.with_train_batches(Some(9)).shuffled(11));
    assert_eq!(shuffled.batches(Split::Train), 9);
    let firsts = |epoch| -> Vec<f32> {
        (0..9)
            .map(|i| shuffled.batch(Split::Train, epoch, i).unwrap().dense[0])
            .collect()
    };
    let (e0, e1) = (firsts(0), firsts(1));
    assert_ne!(e0, e1);
    assert_eq!(e0, firsts(0), "the same order for the same epoch");
    assert!(shuffled.batch(Split::Train, 0, 9).is_err(), "past the cap");
    // A part of a batch is that batch's samples.
    let whole = data.batch(Split::Test, 0, 1).unwrap();
    let part = data
        .part(Split::Test, 0, 1, Part { index: 1, count: 3 })
        .unwrap();
    assert_eq!(part.len(), 6); // 18 test samples left in the last batch: 6, 6, 6
    assert_eq!(part.targets, whole.targets[6..12]);
    assert_eq!(part.indices[0], whole.indices[0][6..12]);
    assert_eq!(part.offsets[0], (0..6).collect::<Vec<i64>>());
    for split in [Split::Train, Split::Test] {
        std::fs::remove_file(BinaryData::file(&files.prefix().unwrap(), split)).ok();
    }
    std::fs::remove_file(raw).ok();
}

#[test]
fn a_batch_part_keeps_each_tables_bags_of_its_samples() {
    let b = MiniBatch {
        dense: (0..8).map(|x| x as f32).collect(), // 4 samples of 2
        indices: vec![vec![1, 2, 3, 4, 5], vec![9, 8, 7, 6]],
        offsets: vec![vec![0, 2, 2, 4], vec![0, 1, 2, 3]],
        targets: vec![0.0, 1.0, 0.0, 1.0],
    };
    let p = b.samples(1..3).unwrap();
    assert_eq!(p.dense, [2.0, 3.0, 4.0, 5.0]);
    assert_eq!(p.indices, [vec![3, 4], vec![8, 7]]);
    assert_eq!(p.offsets, [vec![0, 0], vec![0, 1]]);
    assert_eq!(b.samples(0..4).unwrap(), b);
    assert!(b.samples(2..5).is_err());
    let mut bad = b.clone();
    bad.offsets[1][2] = 9;
    assert!(matches!(
        bad.samples(2..4),
        Err(Error::Offsets { table: 1, .. })
    ));
}
