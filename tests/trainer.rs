//! The trainer behind the reference's flags (`dlrm_kernels::cli`, what `examples/dlrm.rs`
//! runs), end to end: flag parsing, training on generated data and on Criteo-format files,
//! checkpoints and resuming, and every error the flags alone can cause, found before
//! anything runs. (Stopping on signals: `tests/signals.rs`.)

use std::path::{Path, PathBuf};

use clap::Parser;
use dlrm_kernels::checkpoint;
use dlrm_kernels::cli::{self, Args, DataGeneration, Ui};
use dlrm_kernels::data::criteo::DatasetKind;
use dlrm_kernels::interaction::InteractionOp;
use dlrm_kernels::loss::Loss;
use dlrm_kernels::model::{Precision, Preset};
use dlrm_kernels::optim::TableOptimizer;
use dlrm_kernels::train::{Output, Stop, Summary};

fn args(extra: &[&str]) -> Args {
    let mut v = vec!["dlrm", "--progress", "false"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).expect("flags parse")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dlrm-trainer-{}-{name}", std::process::id()))
}

/// No lines, no progress bar.
fn quiet_ui() -> Ui {
    Ui {
        out: Output::new(|_| {}),
        progress: None,
    }
}

/// A run without output, not stopped by any signal.
fn quiet(a: &Args) -> dlrm_kernels::Result<Summary> {
    cli::run(a, &Stop::new(), quiet_ui())
}

#[test]
fn flags_parse_as_documented() {
    let a = args(&[
        "--arch-sparse-feature-size",
        "16",
        "--arch-embedding-size",
        "10-20-30",
        "--arch-mlp-bot",
        "13-64-16",
        "--arch-mlp-top",
        "32-1",
        "--arch-interaction-op",
        "cat",
        "--arch-interaction-itself",
        "true",
        "--data-generation",
        "random",
        "--data-set",
        "terabyte",
        "--max-ind-range",
        "1000",
        "--num-indices-per-lookup",
        "5",
        "--num-indices-per-lookup-fixed",
        "true",
        "--mini-batch-size",
        "32",
        "--num-batches",
        "7",
        "--nepochs",
        "2",
        "--learning-rate",
        "0.5",
        "--lr-num-warmup-steps",
        "3",
        "--lr-decay-start-step",
        "4",
        "--lr-num-decay-steps",
        "5",
        "--loss-function",
        "mse",
        "--optimizer",
        "rwsadagrad",
        "--test-freq",
        "3",
        "--test-mini-batch-size",
        "64",
        "--print-freq",
        "2",
        "--numpy-rand-seed",
        "9",
        "--precision",
        "bf16",
        "--threads",
        "1",
        "--preset",
        "kaggle",
    ]);
    assert_eq!(a.arch_sparse_feature_size, Some(16));
    assert_eq!(a.arch_interaction_op, InteractionOp::Cat);
    assert!(a.arch_interaction_itself && a.num_indices_per_lookup_fixed);
    assert_eq!(
        (a.data_generation, a.data_set),
        (DataGeneration::Random, DatasetKind::Terabyte)
    );
    assert_eq!(
        (a.loss_function, a.optimizer, a.precision),
        (Loss::Mse, TableOptimizer::RowwiseAdagrad, Precision::Bf16)
    );
    assert_eq!(
        (a.preset, a.threads, a.nepochs),
        (Some(Preset::Kaggle), Some(1), 2)
    );
    let c = a.model_config().unwrap();
    assert_eq!(
        (
            c.bottom_mlp,
            c.top_mlp,
            c.table_rows,
            c.embedding_dim,
            c.batch_size
        ),
        (vec![13, 64, 16], vec![32, 1], vec![10, 20, 30], 16, 32)
    );
    // Booleans are real booleans: "false" is false.
    assert!(!args(&["--arch-interaction-itself", "false"]).arch_interaction_itself);
    assert!(Args::try_parse_from(["dlrm", "--arch-interaction-itself", "False"]).is_err());
    assert!(Args::try_parse_from(["dlrm", "--precision", "fp16"]).is_err());
    // Data loading: in line (0) or on a background thread (1), else chosen by the cores.
    assert!(!args(&["--num-workers", "0"]).background_loading(1));
    assert!(args(&["--num-workers", "1"]).background_loading(1));
    assert!(Args::try_parse_from(["dlrm", "--num-workers", "2"]).is_err());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(args(&[]).background_loading(1), cores > 1);
    assert!(!args(&[]).background_loading(cores));
    // Pinning is asked for, never assumed.
    assert!(!args(&[]).pin_threads);
    assert!(args(&["--pin-threads", "true"]).pin_threads);
    // A preset's sizes, capped by --max-ind-range.
    let small = args(&["--preset", "small", "--max-ind-range", "500"]);
    let c = small.model_config().unwrap();
    assert_eq!((c.table_rows, c.embedding_dim), (vec![500; 8], 64));
    assert_eq!(small.lookups_per_bag().unwrap(), 100);
    assert!(args(&["--arch-mlp-bot", "13-x"]).model_config().is_err());
}

#[test]
fn trains_synthetic_data_and_auc_rises() {
    let a = args(&[
        "--arch-embedding-size",
        "2000-2000-2000-2000",
        "--mini-batch-size",
        "128",
        "--num-batches",
        "400",
        "--test-freq",
        "200",
        "--test-num-batches",
        "20",
        "--threads",
        "2",
        "--num-workers",
        "1",
    ]);
    let csv = tmp("metrics.csv");
    let a = Args {
        metrics_csv: Some(csv.clone()),
        ..a
    };
    let s = quiet(&a).unwrap();
    assert_eq!(s.steps, 400);
    let last = s.evals.last().unwrap().eval;
    assert!(last.auc > 0.7, "AUC {}", last.auc);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("step,epoch,train_loss"));
    assert!(text.lines().count() > 10);
    std::fs::remove_file(csv).ok();
}

#[test]
fn random_data_bf16_with_adagrad_runs_and_checkpoints_resume() {
    let ckpt = tmp("model.safetensors");
    let base = [
        "--num-workers",
        "0",
        "--data-generation",
        "random",
        "--arch-embedding-size",
        "300-200",
        "--arch-mlp-bot",
        "4-8-4",
        "--arch-mlp-top",
        "8-1",
        "--arch-sparse-feature-size",
        "4",
        "--mini-batch-size",
        "16",
        "--num-batches",
        "20",
        "--precision",
        "bf16",
        "--optimizer",
        "rwsadagrad",
    ];
    let mut first = base.to_vec();
    first.extend(["--save-model", ckpt.to_str().unwrap()]);
    let s = quiet(&args(&first)).unwrap();
    assert_eq!(s.steps, 20);
    let mut resumed = base.to_vec();
    resumed.extend([
        "--load-model",
        ckpt.to_str().unwrap(),
        "--inference-only",
        "true",
    ]);
    let r = quiet(&args(&resumed)).unwrap();
    assert_eq!(r.evals.len(), 1);
    assert_eq!(r.evals[0].eval.loss, s.evals.last().unwrap().eval.loss);
    std::fs::remove_file(ckpt).ok();
}

/// A small Criteo-format file whose label follows C1 and I1.
fn write_criteo(path: &Path, lines: usize) {
    let mut rng = dlrm_kernels::rng::Rng::new(5);
    let mut text = String::new();
    for _ in 0..lines {
        let c1 = rng.below(50) as u32;
        let i1 = rng.below(10);
        let p = if c1.is_multiple_of(2) { 0.8 } else { 0.2 } * if i1 > 5 { 1.0 } else { 0.8 };
        let label = (rng.uniform_f64() < p) as u8;
        text.push_str(&format!("{label}\t{i1}"));
        for _ in 1..13 {
            text.push_str(&format!("\t{}", rng.below(3)));
        }
        text.push_str(&format!("\t{c1:x}"));
        for _ in 1..26 {
            text.push_str(&format!("\t{:x}", rng.below(20)));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn trains_on_a_kaggle_format_file_via_the_binary_format() {
    let raw = tmp("train.txt");
    write_criteo(&raw, 7000);
    let a = args(&[
        "--data-generation",
        "dataset",
        "--raw-data-file",
        raw.to_str().unwrap(),
        "--max-ind-range",
        "100",
        "--arch-sparse-feature-size",
        "8",
        "--arch-mlp-bot",
        "13-16-8",
        "--arch-mlp-top",
        "16-1",
        "--mini-batch-size",
        "32",
        "--nepochs",
        "3",
        "--learning-rate",
        "0.2",
    ]);
    let s = quiet(&a).unwrap();
    // 6/7 of 7000 lines at 32 per batch, three epochs.
    assert_eq!(s.steps, 3 * 6000usize.div_ceil(32) as u64);
    let (first, last) = (s.evals[0].eval, s.evals.last().unwrap().eval);
    assert_eq!(first.samples, 500);
    assert!(last.auc > 0.65, "AUC {}", last.auc);
    // The converted binary files were made and are reused.
    let bin = PathBuf::from(format!("{}_processed_train.bin", raw.display()));
    assert!(bin.exists());
    for split in ["train", "test"] {
        std::fs::remove_file(format!("{}_processed_{split}.bin", raw.display())).ok();
    }
    std::fs::remove_file(raw).ok();
}

#[test]
fn trains_on_terabyte_day_files_with_shuffled_batches() {
    let prefix = tmp("day");
    for d in 0..3 {
        write_criteo(&PathBuf::from(format!("{}_{d}", prefix.display())), 2000);
    }
    let a = args(&[
        "--data-generation",
        "dataset",
        "--data-set",
        "terabyte",
        "--raw-data-file",
        prefix.to_str().unwrap(),
        "--max-ind-range",
        "100",
        "--arch-sparse-feature-size",
        "8",
        "--arch-mlp-bot",
        "13-16-8",
        "--arch-mlp-top",
        "16-1",
        "--mini-batch-size",
        "32",
        "--nepochs",
        "2",
        "--learning-rate",
        "0.2",
        "--data-randomize",
        "total",
    ]);
    let s = quiet(&a).unwrap();
    // Days 0 and 1 train (4000 samples), the first half of day 2 tests.
    assert_eq!(s.steps, 2 * 4000usize.div_ceil(32) as u64);
    assert_eq!(s.evals[0].eval.samples, 1000);
    assert!(
        s.evals.last().unwrap().eval.auc > 0.65,
        "{:?}",
        s.evals.last()
    );
    for split in ["train", "test"] {
        std::fs::remove_file(format!("{}_processed_{split}.bin", prefix.display())).ok();
    }
    for d in 0..3 {
        std::fs::remove_file(format!("{}_{d}", prefix.display())).ok();
    }
}

#[test]
fn malformed_data_stops_before_training() {
    let raw = tmp("bad.txt");
    write_criteo(&raw, 100);
    let mut lines: Vec<String> = std::fs::read_to_string(&raw)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[49] = "1\tnot-a-number".into(); // line 50, in the training split
    std::fs::write(&raw, lines.join("\n") + "\n").unwrap();
    let a = args(&[
        "--data-generation",
        "dataset",
        "--raw-data-file",
        raw.to_str().unwrap(),
        "--max-ind-range",
        "100",
        "--data-set",
        "kaggle",
    ]);
    let err = quiet(&a).unwrap_err().to_string();
    assert!(
        err.contains("bad.txt:50: dense feature I1 \"not-a-number\" is not an integer"),
        "{err}"
    );
    let bin = PathBuf::from(format!("{}_processed_train.bin", raw.display()));
    assert!(!bin.exists(), "no partial output is left to train on");
    let mut skipping = a.clone();
    skipping.skip_malformed = true;
    skipping.arch_sparse_feature_size = Some(8);
    skipping.arch_mlp_bot = Some("13-8".into());
    skipping.arch_mlp_top = Some("8-1".into());
    assert!(quiet(&skipping).is_ok());
    for split in ["train", "test"] {
        std::fs::remove_file(format!("{}_processed_{split}.bin", raw.display())).ok();
    }
    std::fs::remove_file(raw).ok();
}

#[test]
fn a_diverging_run_stops_with_the_iteration_number() {
    let a = args(&[
        "--data-generation",
        "random",
        "--arch-embedding-size",
        "50-50",
        "--arch-mlp-bot",
        "4-8-4",
        "--arch-mlp-top",
        "8-1",
        "--arch-sparse-feature-size",
        "4",
        "--num-batches",
        "50",
        "--learning-rate",
        "1e30",
        "--round-targets",
        "false",
    ]);
    let err = quiet(&a).unwrap_err().to_string();
    assert!(err.starts_with("training stopped at iteration "), "{err}");
    assert!(err.contains("is not finite"), "{err}");
}

/// A small random-data run's flags, with `overrides` in place of its values.
fn small(overrides: &[(&str, &str)]) -> Args {
    let mut flags = vec![
        ("--data-generation", "random"),
        ("--arch-embedding-size", "50-50"),
        ("--arch-mlp-bot", "13-8-4"),
        ("--arch-mlp-top", "8-1"),
        ("--arch-sparse-feature-size", "4"),
        ("--mini-batch-size", "16"),
        ("--num-batches", "5"),
        ("--num-workers", "0"),
    ];
    for &(flag, value) in overrides {
        match flags.iter_mut().find(|(f, _)| *f == flag) {
            Some(slot) => slot.1 = value,
            None => flags.push((flag, value)),
        }
    }
    let flat: Vec<&str> = flags.iter().flat_map(|&(f, v)| [f, v]).collect();
    args(&flat)
}

fn small_err(overrides: &[(&str, &str)]) -> String {
    match quiet(&small(overrides)) {
        Ok(s) => panic!("{overrides:?} ran {} steps", s.steps),
        Err(e) => e.to_string(),
    }
}

#[test]
fn flag_errors_name_the_flag_and_its_value() {
    let cases: [(&[(&str, &str)], &str); 10] = [
        (
            &[("--mini-batch-size", "0")],
            "--mini-batch-size must be at least 1, got 0",
        ),
        (
            &[("--test-mini-batch-size", "0")],
            "--test-mini-batch-size must be at least 1, got 0",
        ),
        (&[("--threads", "0")], "--threads must be at least 1, got 0"),
        (
            &[("--learning-rate", "nan")],
            "--learning-rate must be a finite number, got NaN",
        ),
        (
            &[("--learning-rate", "inf")],
            "--learning-rate must be a finite number, got inf",
        ),
        (
            &[("--num-indices-per-lookup", "0")],
            "--num-indices-per-lookup must be at least 1, got 0",
        ),
        (
            &[("--arch-sparse-feature-size", "0")],
            "--arch-sparse-feature-size must be at least 1, got 0",
        ),
        (
            &[("--arch-mlp-bot", "13-0-4")],
            "--arch-mlp-bot \"13-0-4\": every size must be at least 1",
        ),
        (
            &[("--arch-embedding-size", "50-0")],
            "--arch-embedding-size \"50-0\": every size must be at least 1",
        ),
        (
            &[
                ("--data-generation", "synthetic"),
                ("--mini-batch-size", "0"),
            ],
            "--mini-batch-size must be at least 1, got 0",
        ),
    ];
    for (overrides, want) in cases {
        assert_eq!(small_err(overrides), want);
    }
}

#[test]
fn a_model_too_large_for_memory_is_refused_naming_the_flag() {
    let err = small_err(&[("--mini-batch-size", "1000000000000")]);
    assert!(
        err.starts_with("--mini-batch-size 1000000000000: the model needs "),
        "{err}"
    );
    assert!(err.contains("samples a batch fit"), "{err}");
    let err = small_err(&[("--test-mini-batch-size", "1000000000000")]);
    assert!(
        err.starts_with("--test-mini-batch-size 1000000000000: "),
        "{err}"
    );
    let err = small_err(&[("--arch-mlp-top", "100000000000-1")]);
    assert!(err.starts_with("--arch-mlp-top 100000000000-1: "), "{err}");
    let huge = vec!["4294967295"; 64].join("-");
    let err = small_err(&[("--arch-embedding-size", &huge)]);
    assert!(
        err.starts_with(&format!("--arch-embedding-size {huge}: ")),
        "{err}"
    );
    assert!(err.contains("--max-ind-range"), "{err}");
    let err = small_err(&[("--mini-batch-size", &usize::MAX.to_string())]);
    assert!(
        err.starts_with("--mini-batch-size 18446744073709551615: "),
        "{err}"
    );
}

#[test]
fn flags_that_would_be_ignored_are_errors() {
    assert_eq!(
        small_err(&[("--raw-data-file", "train.txt")]),
        "--raw-data-file is only read with --data-generation dataset (this run would \
         train on random data)"
    );
    assert_eq!(
        small_err(&[
            ("--data-generation", "synthetic"),
            ("--processed-data-file", "day")
        ]),
        "--processed-data-file is only read with --data-generation dataset (this run \
         would train on synthetic data)"
    );
    assert_eq!(
        small_err(&[("--inference-only", "true")]),
        "--inference-only true needs --load-model: without it there is no trained model \
         to evaluate"
    );
}

#[test]
fn output_paths_are_checked_before_anything_runs() {
    let dir = tmp("outputs");
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("train.txt");
    write_criteo(&raw, 300);
    let csv = dir.join("metrics.csv");
    let missing = PathBuf::from("/nonexistent/dir/m.safetensors");
    let cases: [(&str, &Path, &str); 5] = [
        (
            "--save-model",
            &missing,
            "directory /nonexistent/dir does not exist",
        ),
        ("--save-model", &dir, "is a directory"),
        (
            "--metrics-csv",
            Path::new("/nonexistent/dir/m.csv"),
            "directory /nonexistent/dir does not exist",
        ),
        ("--metrics-csv", &dir, "is a directory"),
        ("--load-model", &missing, "No such file or directory"),
    ];
    for (flag, path, why) in cases {
        let path = path.to_str().unwrap();
        let mut flags = vec![
            ("--data-generation", "dataset"),
            ("--raw-data-file", raw.to_str().unwrap()),
            ("--max-ind-range", "100"),
            ("--arch-mlp-bot", "13-8-4"),
            (flag, path),
        ];
        if flag != "--metrics-csv" {
            flags.push(("--metrics-csv", csv.to_str().unwrap()));
        }
        let err = small_err(&flags);
        assert!(err.starts_with(&format!("{flag} {path}: ")), "{err}");
        assert!(err.contains(why), "{err}");
        // Nothing ran: the data was not converted, the CSV not created.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["train.txt"], "{flag}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A signal before training: nothing is trained or saved, and the run reports that it
/// was interrupted. (Signals during training: the child-process tests below.)
#[test]
fn a_stop_before_training_trains_and_saves_nothing() {
    let dir = tmp("stop");
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("m.safetensors");
    let a = small(&[
        ("--num-batches", "10"),
        ("--test-freq", "4"),
        ("--save-model", ckpt.to_str().unwrap()),
    ]);
    // Stopped before training: nothing trained, nothing saved.
    let stop = Stop::new();
    stop.request();
    let s = cli::run(&a, &stop, quiet_ui()).unwrap();
    assert!(
        s.interrupted() && s.steps == 0 && s.evals.is_empty(),
        "{s:?}"
    );
    assert!(!ckpt.exists());
    let full = quiet(&a).unwrap();
    assert_eq!((full.steps, full.interrupted()), (10, false));
    assert_eq!(checkpoint::load(&ckpt).unwrap().steps(), 10);
    std::fs::remove_dir_all(dir).unwrap();
}
